"""The ASGI application: the /v1 gateway, /metrics, the console and management API
(Django), and WebSockets.

/v1 goes straight to the gateway (routing.gateway), past Django's middleware and view
machinery, which would cost more than the whole gateway does per request.
"""

from __future__ import annotations

import os
from typing import cast

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from config.websocket_origin import SameOriginValidator  # noqa: E402
from config.websocket_routes import websocket_urlpatterns  # noqa: E402
from modelserver.body_limit import ASGIApp, BodySizeLimit  # noqa: E402
from routing.gateway.app import build_gateway  # noqa: E402
from routing.gateway.exchange import Receive, Scope, Send  # noqa: E402
from routing.gateway.metrics_endpoint import metrics_endpoint  # noqa: E402

gateway = build_gateway()
# Django's stubs type the scope as a dict; the limit passes it through unchanged.
console_http = BodySizeLimit(cast(ASGIApp, django_http), settings.MAX_REQUEST_BODY_BYTES)
websockets = SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path.startswith("/v1/"):
            await gateway(scope, receive, send)
        elif path == "/metrics":
            await metrics_endpoint(scope, receive, send)
        else:
            await console_http(scope, receive, send)
    elif kind == "websocket":
        await websockets(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Writes the usage events still buffered, then closes upstream connections.
            await gateway.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
