"""WebSockets only from the console's own pages: the Origin must be this very origin
(scheme, host and port, as the request names them) or one of CSRF_TRUSTED_ORIGINS, and the
host one of ALLOWED_HOSTS. Channels' AllowedHostsOriginValidator compares host names only,
so a page on another port of an allowed host (another service on 127.0.0.1) could open a
socket with the signed-in user's cookie."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def _header(scope: Mapping[str, Any], name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in scope.get("headers", []) if key == name), "")


def allowed(scope: Mapping[str, Any]) -> bool:
    origin = _header(scope, b"origin").lower().rstrip("/")
    host = _header(scope, b"host").lower()
    if not origin or not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if settings.HTTPS or scope.get("scheme") == "wss" else "http"
    trusted = {entry.lower().rstrip("/") for entry in settings.CSRF_TRUSTED_ORIGINS}
    return origin == f"{scheme}://{host}" or origin in trusted


class SameOriginValidator:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)
