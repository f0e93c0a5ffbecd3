"""Live usage dashboards over a WebSocket: `ws/o/<org>/usage/?range=24h&split=model&tz=...`
(and `&deployment=<id>` for a deployment's charts). Sends the dashboard on connect, then
polls (metering.live) once a second and pushes it again when it changed."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from metering import live
from metering.dashboards import DashboardParams

POLL_SECONDS = 1.0
NOT_FOUND = 4404  # close code: no such organization or deployment, or not yours


def _in_thread(function):  # type: ignore[no-untyped-def]
    # Not thread-sensitive: a month of rollups split by key must not queue every other
    # consumer's database call behind it on the one shared thread.
    return database_sync_to_async(function, thread_sensitive=False)


class UsageConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_FOUND)
            return
        query = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
        params = DashboardParams.parse(query)
        self.feed = live.UsageFeed(user.pk, self.scope["url_route"]["kwargs"]["org_slug"], params)
        first = await _in_thread(self.feed.first)()
        if first is None:
            await self.close(code=NOT_FOUND)
            return
        await self.accept()
        await self.send(json.dumps(first))
        self.poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            update = await _in_thread(self.feed.poll)()
            if update == live.GONE:
                await self.close(code=NOT_FOUND)
                return
            if update is not None:
                await self.send(json.dumps(update))

    async def disconnect(self, code: int) -> None:
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.cancel()
