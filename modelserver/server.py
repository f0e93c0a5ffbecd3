"""Running a model server process under uvicorn, with a graceful drain on SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from modelserver.app import ServerOptions, build_app
from modelserver.auth import RequireApiKey
from modelserver.body_limit import BodySizeLimit
from modelserver.catalog import ModelSpec

log = logging.getLogger(__name__)


class _DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: /health turns 503 at once, no new connections are accepted,
    requests in flight (streams included) finish within the drain deadline, then the
    engine stops and the process exits 0."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_drain = on_drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_drain()
        super().handle_exit(sig, frame)


def serve(
    spec: ModelSpec,
    *,
    host: str,
    port: int,
    options: ServerOptions,
    drain_seconds: float = 30.0,
    max_body_bytes: int = 4 * 1024 * 1024,
    api_key: str = "",
) -> None:
    app, server = build_app(spec, options)
    served: ASGIApp = RequireApiKey(app, api_key) if api_key else app

    def start_draining() -> None:
        if not server.draining:
            log.info("draining: finishing requests in flight (up to %.0f s)", drain_seconds)
        server.draining = True

    config = uvicorn.Config(
        BodySizeLimit(served, max_body_bytes),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(drain_seconds),
        lifespan="on",
    )
    # uvicorn re-raises the signal it drained on once it is done, to let the previous
    # handler act; with this one in place a drained server exits 0 instead of dying by it.
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, lambda signum, frame: None)
    _DrainingServer(config, start_draining).run()
