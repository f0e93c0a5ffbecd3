"""Every error is OpenAI-shaped with OpenAI's status, maps to the SDK's exception class,
and no input gives a 500."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from django.conf import settings

from metering.models import UsageEvent
from tenancy import services as console_services
from tenancy.models import OrgStatus
from tests.conftest import Tenants
from tests.factories import issue_key, owner_context
from tests.gateway.conftest import Backend, set_limits
from tests.gateway.helpers import chat, client, provider_for, route_to, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and len(error["message"]) > 20
    assert response.headers["x-request-id"].startswith("req_")
    return error


def test_sdk_exception_classes(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    good = issue_key(tenants.org_a).plaintext
    messages = [{"role": "user", "content": "Hi"}]

    with pytest.raises(openai.AuthenticationError):
        client(gateway, "sbk_notarealkey_" + "x" * 40).chat.completions.create(model="chat-default", messages=messages)
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway, issue_key(tenants.org_a, ["read"]).plaintext).chat.completions.create(model="chat-default", messages=messages)
    with pytest.raises(openai.NotFoundError) as missing:
        client(gateway, good).chat.completions.create(model="no-such-model", messages=messages)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client(gateway, good).chat.completions.create(model="chat-default", messages=[])
    set_limits(tenants.org_a, requests_per_minute=1)
    limited = issue_key(tenants.org_a).plaintext  # a fresh key: the org snapshot reloads within 2 s
    wait_for(lambda: chat(gateway, limited, "chat-default").status_code == 429, timeout=5)
    with pytest.raises(openai.RateLimitError):
        client(gateway, limited).chat.completions.create(model="chat-default", messages=messages)


def test_bad_input_of_every_kind(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    key = issue_key(tenants.org_a).plaintext
    auth = {"Authorization": f"Bearer {key}"}
    url = gateway + "/v1/chat/completions"

    _assert_openai_error(httpx.post(url, content=b"{not json", headers=auth), 400, "invalid_json")
    _assert_openai_error(httpx.post(url, content=b"[1, 2]", headers=auth), 400, "invalid_json")
    _assert_openai_error(httpx.post(url, content=b"", headers=auth), 400, "invalid_json")
    _assert_openai_error(httpx.post(url, json={"messages": [{"role": "user", "content": "x"}]}, headers=auth), 400, "invalid_model")
    _assert_openai_error(httpx.post(url, json={"model": 7, "messages": []}, headers=auth), 400, "invalid_model")
    error = _assert_openai_error(httpx.post(url, json={"model": "chat-default", "messages": "hi"}, headers=auth), 400, "invalid_messages")
    assert error["param"] == "messages"
    _assert_openai_error(
        httpx.post(url, json={"model": "chat-default", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, headers=auth),
        400,
        "invalid_stream",
    )
    _assert_openai_error(
        httpx.post(url, json={"model": "chat-default", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, headers=auth),
        400,
        "invalid_max_tokens",
    )
    _assert_openai_error(
        httpx.post(url, json={"model": "chat-default", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}, headers=auth),
        400,
        "invalid_max_tokens",
    )
    _assert_openai_error(
        httpx.post(gateway + "/v1/embeddings", json={"model": "chat-default", "input": []}, headers=auth), 400, "invalid_input"
    )
    _assert_openai_error(
        httpx.post(gateway + "/v1/embeddings", json={"model": "chat-default", "input": "x", "stream": True}, headers=auth),
        400,
        "invalid_stream",
    )
    _assert_openai_error(httpx.post(gateway + "/v1/completions", json={"model": "chat-default"}, headers=auth), 400, "invalid_prompt")
    _assert_openai_error(httpx.post(url, content=b"x" * (1024 * 1024 + 1), headers=auth), 413, "request_too_large")
    _assert_openai_error(httpx.get(url, headers=auth), 405, "method_not_allowed")
    _assert_openai_error(httpx.post(gateway + "/v1/images/generations", json={}, headers=auth), 404, "unknown_url")
    _assert_openai_error(httpx.post(url, json={"model": "chat-default", "messages": []}), 401, "missing_api_key")
    _assert_openai_error(httpx.post(url, json={}, headers={"Authorization": "Basic abc"}), 401, "invalid_authorization_header")
    _assert_openai_error(httpx.post(url, json={}, headers={"Authorization": "Bearer nope"}), 401, "malformed_api_key")
    _assert_openai_error(httpx.get(gateway + "/v1/models/unknown", headers=auth), 404, "model_not_found")

    # Requests refused after the key was known still leave a usage event (nothing billed).
    events = wait_for(
        lambda: list(UsageEvent.objects.for_org(tenants.org_a)) if UsageEvent.objects.for_org(tenants.org_a).count() >= 12 else None
    )
    assert all(event.cost == 0 and event.status >= 400 for event in events)


def test_odd_bodies_never_give_a_server_error(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    auth = {"Authorization": f"Bearer {issue_key(tenants.org_a).plaintext}"}
    bodies = [
        b"null",
        b"true",
        b'"text"',
        b"{}",
        b'{"model": null}',
        b'{"model": ""}',
        b'{"model": "chat-default"}',
        b'{"model": "chat-default", "messages": [1, 2]}',
        b'{"model": "chat-default", "messages": [{}]}',
        b'{"model": "chat-default", "messages": [{"role": "user", "content": null}]}',
        b'{"model": "chat-default", "messages": [{"role": "user", "content": "x"}], "stream_options": 3, "stream": true}',
        b'{"model": "chat-default", "prompt": {"a": 1}}',
        b'{"model": "chat-default", "input": [null]}',
        '{"model": "\u00e9\u4e2d"}'.encode(),
        b'{"model": "chat-default", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 1e400}',
        b"\xff\xfe\x00",
    ]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        for body in bodies:
            response = httpx.post(gateway + path, content=body, headers=auth)
            assert response.status_code < 500, (path, body, response.text)
            assert "error" in response.json() or response.status_code == 200


def test_a_suspended_organization_is_refused_with_the_reason(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    tenants.org_a.status, tenants.org_a.status_reason = OrgStatus.SUSPENDED, "invoice 2026-10 unpaid"
    tenants.org_a.save()
    error = _assert_openai_error(chat(gateway, issue_key(tenants.org_a).plaintext, "chat-default"), 403, "organization_suspended")
    assert "invoice 2026-10 unpaid" in str(error["message"])
    assert backends[0].requests == 0


def test_another_tenants_models_do_not_exist_for_you(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "acme-private", [(provider_for(tenants.org_a, backends[0]), 100)])
    key_b = issue_key(tenants.org_b).plaintext
    _assert_openai_error(chat(gateway, key_b, "acme-private"), 404, "model_not_found")
    assert httpx.get(gateway + "/v1/models", headers={"Authorization": f"Bearer {key_b}"}).json()["data"] == []
    assert backends[0].requests == 0


def test_a_revoked_key_stops_working_within_the_cache_time(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    issued = issue_key(tenants.org_a)
    assert chat(gateway, issued.plaintext, "chat-default").status_code == 200
    console_services.revoke_api_key(owner_context(tenants.org_a), issued.api_key)
    revoked_at = time.monotonic()
    wait_for(lambda: chat(gateway, issued.plaintext, "chat-default").status_code == 401, timeout=30, interval=0.05)
    # The stated bound is the key cache time plus one reload. The margin is generous so a
    # loaded machine passes, and still far below what a key cached for a minute would take.
    assert time.monotonic() - revoked_at < settings.GATEWAY_KEY_CACHE_SECONDS + 8.0
    _assert_openai_error(chat(gateway, issued.plaintext, "chat-default"), 401, "revoked_api_key")
