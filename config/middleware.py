"""Request ids: taken from a sane `X-Request-Id` or made up, and echoed on every response."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def _request_id_for(request: HttpRequest) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _SAFE_ID.match(given) else f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.request_id = _request_id_for(request)  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-Id"] = request.request_id  # type: ignore[attr-defined]
        return response
