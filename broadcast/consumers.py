"""The console's live WebSocket consumers share one loop: re-read what the page shows when a
change is published to one of its groups (broadcast.publish), or, where changes are not
pushed (the embedded default), once a second."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from channels.generic.websocket import AsyncWebsocketConsumer

from broadcast.publish import pushed

POLL_SECONDS = 1.0  # where nothing is pushed
# Where changes are pushed, a page still re-reads at least this often: a late event for an
# older minute, or a change made by a path that publishes nothing, shows within it.
REFRESH_SECONDS = 30.0

Refresh = Callable[[], Awaitable[bool]]  # re-reads and sends; False when the page must close


class LiveConsumer(AsyncWebsocketConsumer):
    async def follow(self, groups: list[str], refresh: Refresh, *, due_in: Callable[[], float] | None = None) -> None:
        """Starts calling `refresh` on every change published to `groups`, or every
        POLL_SECONDS where nothing is pushed. `due_in` says how soon the page needs a
        re-read anyway (a chart's window sliding on, a throttled recompute)."""
        self._changed = asyncio.Event()
        self._followed: list[str] = []
        if pushed():
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self._followed.append(group)
        self._follower = asyncio.ensure_future(self._follow(refresh, due_in or (lambda: REFRESH_SECONDS)))

    async def _follow(self, refresh: Refresh, due_in: Callable[[], float]) -> None:
        while True:
            timeout = min(REFRESH_SECONDS, max(0.0, due_in())) if pushed() else POLL_SECONDS
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
            self._changed.clear()
            if not await refresh():
                return

    async def live_changed(self, event: dict[str, object]) -> None:
        """A change was published to one of the followed groups (broadcast.groups.CHANGED)."""
        if hasattr(self, "_changed"):
            self._changed.set()

    async def disconnect(self, code: int) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.cancel()
        for group in getattr(self, "_followed", []):
            await self.channel_layer.group_discard(group, self.channel_name)
