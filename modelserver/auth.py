"""An API key for the model server, as vLLM's `--api-key`: when set (in the environment, so
that `ps` never shows it), every request but `/health` needs `Authorization: Bearer <key>`.
The platform starts each replica with its own key, which only the control plane and the
gateways know; run on its own, without the variable, the server answers everyone."""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_VARIABLE = "MODELSERVER_API_KEY"
OPEN_PATHS = frozenset({"/health"})  # liveness only: "ready" or "loading", nothing else


class RequireApiKey:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = orjson.dumps(
                    {
                        "error": {
                            "message": "Give this replica's API key as `Authorization: Bearer <key>`.",
                            "type": "authentication_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    }
                )
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
