"""Scale from zero: a request for a deployment with no replica asks the control plane for
one (at most once per deployment every few seconds) and waits until one is READY, within
the cold-start timeout and the route's deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from deployments.enqueue import request_scale_from_zero
from routing.gateway.cache import RefreshingCache, run_db
from routing.gateway.errors import GatewayError
from routing.gateway.snapshot import OrgSnapshot, Target

WAKE_REPEAT_S = 5.0
RequestReplica = Callable[[str], None]  # deployment id -> asks the control plane; runs in a thread

log = logging.getLogger("switchboard.gateway")


def request_replica(deployment_id: str) -> None:
    """The control plane's wake-up call, marked on the deployment and reconciled at once."""
    request_scale_from_zero(deployment_id=deployment_id)


class ColdStart:
    def __init__(self, *, snapshots: RefreshingCache[str, OrgSnapshot], request: RequestReplica, timeout_s: float) -> None:
        self.snapshots = snapshots
        self.request = request
        self.timeout_s = timeout_s
        self._woken: dict[str, float] = {}

    async def wake(self, org_id: str, targets: list[Target], deadline: float) -> OrgSnapshot:
        """Asks for a replica of each target's deployment; returns the first snapshot in
        which one of them has an endpoint."""
        now = time.monotonic()
        for target in targets:
            if now - self._woken.get(target.deployment_id, -WAKE_REPEAT_S) >= WAKE_REPEAT_S:
                self._woken[target.deployment_id] = now
                try:
                    await run_db(self.request, target.deployment_id)
                except Exception as error:  # noqa: BLE001 - deleted meanwhile, broker down: say so
                    log.exception("could not wake deployment %s", target.deployment_id)
                    raise GatewayError(
                        503,
                        "The deployment is scaled to zero and the control plane could not be asked for a replica. Retry shortly.",
                        "cold_start_unavailable",
                    ) from error
        wanted = {t.deployment_id for t in targets}
        give_up = min(time.perf_counter() + self.timeout_s, deadline)
        while True:
            self.snapshots.invalidate(org_id)
            snapshot = await self.snapshots.get(org_id)
            if any(t.endpoints for r in snapshot.routes.values() for t in r.targets if t.deployment_id in wanted):
                return snapshot
            if time.perf_counter() >= give_up:
                raise GatewayError(
                    503,
                    f"The deployment is scaled to zero and no replica became ready within {self.timeout_s:g} s. Retry shortly.",
                    "cold_start_timeout",
                )
            await asyncio.sleep(0.5)
