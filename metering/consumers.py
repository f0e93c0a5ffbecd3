"""Live usage dashboards over a WebSocket: `ws/o/<org>/usage/?range=24h&split=model&tz=...`
(and `&deployment=<id>` for a deployment's charts). Sends the dashboard on connect, then
again whenever it changed: told by the ingester, the control plane and tenancy through the
channel layer where it crosses processes (Redis), or by polling (metering.live) once a
second on the embedded default (broadcast.consumers)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async

from broadcast.consumers import LiveConsumer
from broadcast.groups import deployment_group, members_group, usage_group
from metering import live
from metering.dashboards import DashboardParams

NOT_FOUND = 4404  # close code: no such organization or deployment, or not yours


def _in_thread(function):  # type: ignore[no-untyped-def]
    # Not thread-sensitive: a month of rollups split by key must not queue every other
    # consumer's database call behind it on the one shared thread.
    return database_sync_to_async(function, thread_sensitive=False)


class UsageConsumer(LiveConsumer):
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
        org_id = self.feed.organization_id
        followed = [usage_group(org_id), members_group(org_id)]
        if params.deployment_id:
            followed.append(deployment_group(params.deployment_id))
        await self.follow(followed, self._refresh, due_in=self.feed.due_in)

    async def _refresh(self) -> bool:
        update = await _in_thread(self.feed.poll)()
        if update == live.GONE:
            await self.close(code=NOT_FOUND)
            return False
        if update is not None:
            await self.send(json.dumps(update))
        return True
