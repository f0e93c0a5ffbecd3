"""Publishing a change to channel-layer groups once the transaction that made it commits.

Only where the channel layer crosses processes (Redis): the ingester, the Celery worker
and the web server are separate processes, and the embedded default's in-memory layer
reaches none but its own, so there the consumers poll instead (settings.LIVE_UPDATES_PUSHED).
A publish that fails is logged and dropped: a dashboard that misses a push catches up on
its next refresh, and a write must never fail because a WebSocket could not be told.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from broadcast.groups import CHANGED

log = logging.getLogger(__name__)


def pushed() -> bool:
    """Whether consumers are told of changes (True) or poll for them (False)."""
    return bool(settings.LIVE_UPDATES_PUSHED)


def publish_after_commit(*, groups: Iterable[str]) -> None:
    """Tells each group's consumers that something changed, after the current transaction
    commits (at once outside one). Nothing is published for a rolled-back change."""
    if not pushed():
        return
    names = sorted(set(groups))
    if names:
        transaction.on_commit(lambda: _send(names))


def _send(groups: list[str]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_send_all)(layer, groups)
    except Exception:  # noqa: BLE001 - any failure of the layer (Redis down) must not fail the write
        log.warning("could not publish a live update to %s", ", ".join(groups), exc_info=True)


async def _send_all(layer: object, groups: list[str]) -> None:
    for group in groups:
        await layer.group_send(group, {"type": CHANGED})  # type: ignore[attr-defined]
