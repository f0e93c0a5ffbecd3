"""What the serving engines raise to the HTTP layer."""

from __future__ import annotations


class QueueFull(Exception):
    """The waiting queue is at its bound; answer 503 with Retry-After."""


class EngineUnavailable(Exception):
    """The engine is not running: still loading, broken, or shutting down."""
