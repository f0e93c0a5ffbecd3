"""Live deployment status over a WebSocket.

The consumer re-reads the deployment's status and its live parts (start-up stage,
replicas, event timeline, canary: deployments.live) when the control plane (or tenancy,
for a member who leaves) publishes a change through the channel layer, and sends fresh
fragments when they changed; a change in a start's ticking seconds alone is not sent. On
the embedded default, whose in-memory channel layer cannot cross processes, it re-reads
once a second instead (broadcast.consumers).
"""

from __future__ import annotations

import json

from channels.db import database_sync_to_async

from broadcast.consumers import LiveConsumer
from broadcast.groups import deployment_group, members_group
from deployments import live, selectors
from tenancy import selectors as tenancy_selectors
from tenancy.models import User

NOT_FOUND = 4404  # close code: no such deployment, or not yours


def _snapshot(user_id: int, org_slug: str, deployment_id: str) -> dict[str, object] | None:
    user = User.objects.filter(pk=user_id).first()
    membership = tenancy_selectors.membership_in(user, org_slug) if user else None
    if membership is None:
        return None
    org = membership.organization
    deployment = selectors.live_deployments(org).filter(pk=deployment_id).first()
    if deployment is None:
        return None
    return {
        "organization_id": org.pk,
        "status": deployment.status,
        "status_label": deployment.get_status_display(),
        "status_reason": deployment.status_reason,
        **live.rendered(deployment, live.live_parts(org, deployment)),
    }


class DeploymentStatusConsumer(LiveConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        kwargs = self.scope["url_route"]["kwargs"]
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_FOUND)
            return
        self.args = (user.pk, kwargs["org_slug"], kwargs["deployment_id"])
        first = await database_sync_to_async(_snapshot)(*self.args)
        if first is None:
            await self.close(code=NOT_FOUND)
            return
        organization_id = first.pop("organization_id")
        await self.accept()
        await self.send(json.dumps(first))
        self.last = first
        await self.follow([deployment_group(kwargs["deployment_id"]), members_group(organization_id)], self._refresh)  # type: ignore[arg-type]

    async def _refresh(self) -> bool:
        snapshot = await database_sync_to_async(_snapshot)(*self.args)
        if snapshot is None:  # deleted, or membership revoked
            await self.close(code=NOT_FOUND)
            return False
        snapshot.pop("organization_id")
        if not live.same_page(snapshot, self.last):
            self.last = snapshot
            await self.send(json.dumps(snapshot))
        return True
