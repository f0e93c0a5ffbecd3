"""What this gateway saw of each revision of a running canary: attempts sent to its
replicas, those that failed, and the latency of whole answers. Counted in memory on the
hot path (a dict update) and added to the database about once a second, off the event
loop (deployments.canaries.record_tallies), where the canary's verdict reads them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from deployments.canaries import TallyDelta, record_tallies
from routing.gateway.cache import run_db

log = logging.getLogger("switchboard.gateway")

Report = Callable[[list[TallyDelta]], Awaitable[None]]


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    latency_samples: int = 0


async def report_to_database(deltas: list[TallyDelta]) -> None:
    await run_db(record_tallies, deltas)


class CanaryTally:
    def __init__(self, *, report: Report = report_to_database, every_s: float = 1.0) -> None:
        self.report = report
        self.every_s = every_s
        self._pending: dict[tuple[str, str], _Counts] = {}
        self._scheduled: asyncio.TimerHandle | None = None
        self._reporting: set[asyncio.Task[None]] = set()

    def record(self, *, canary_id: str, revision_id: str, failed: bool, latency_ms: float | None) -> None:
        """One attempt on a replica of the revision: failed (5xx, timeout, no connection)
        or answered; `latency_ms` for a whole (non-streamed) answer."""
        counts = self._pending.setdefault((canary_id, revision_id), _Counts())
        counts.requests += 1
        counts.errors += failed
        if latency_ms is not None:
            counts.latency_ms_sum += latency_ms
            counts.latency_samples += 1
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(self.every_s, self._flush)

    def _flush(self) -> None:
        self._scheduled = None
        deltas = self._take()
        if deltas:
            task = asyncio.get_running_loop().create_task(self._report(deltas))
            self._reporting.add(task)
            task.add_done_callback(self._reporting.discard)

    def _take(self) -> list[TallyDelta]:
        pending, self._pending = self._pending, {}
        return [
            TallyDelta(
                canary_id=canary_id,
                revision_id=revision_id,
                requests=counts.requests,
                errors=counts.errors,
                latency_ms_sum=counts.latency_ms_sum,
                latency_samples=counts.latency_samples,
            )
            for (canary_id, revision_id), counts in pending.items()
        ]

    async def _report(self, deltas: list[TallyDelta]) -> None:
        try:
            await self.report(deltas)
        except Exception:  # noqa: BLE001 - counts for a verdict must never fail a request
            log.exception("could not add %d canary tallies; the verdict waits for more", len(deltas))

    async def aclose(self) -> None:
        """Reports what is still counted (the gateway shutting down)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        deltas = self._take()
        if deltas:
            await self._report(deltas)
        if self._reporting:
            await asyncio.gather(*self._reporting)
