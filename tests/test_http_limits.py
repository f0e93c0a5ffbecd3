"""Body limits and request ids, through the real ASGI server."""

from __future__ import annotations

import httpx
import pytest
from django.conf import settings

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_body_over_the_limit_is_refused_with_413(live_server_url: str) -> None:
    too_big = b"{" + b" " * settings.MAX_REQUEST_BODY_BYTES + b"}"
    response = httpx.post(f"{live_server_url}/api/v1/keys/", content=too_big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(live_server_url: str) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(settings.MAX_REQUEST_BODY_BYTES // 65536 + 4):
            yield b"x" * 65536

    response = httpx.post(
        f"{live_server_url}/accounts/login/", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413


def test_bodies_under_the_limit_reach_the_api(live_server_url: str) -> None:
    response = httpx.post(f"{live_server_url}/api/v1/keys/", content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_every_response_carries_a_request_id(live_server_url: str) -> None:
    given = httpx.get(f"{live_server_url}/accounts/login/", headers={"X-Request-Id": "trace-12345678"})
    assert given.headers["x-request-id"] == "trace-12345678"
    made = httpx.get(f"{live_server_url}/api/v1/organization/", headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["x-request-id"].startswith("req_")
