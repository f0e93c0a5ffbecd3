"""The usage event and its hand-off from the gateway.

`submit()` is the entry point: it appends to an in-process buffer and returns at once, so
no response waits on the database. A writer task on the same event loop flushes the buffer
every FLUSH_INTERVAL_S (or sooner when it fills) with one bulk insert, run in a thread. A
failed write keeps the events and retries on the next tick, so a database outage delays
usage but loses none; rows are unique by request id, so a retried batch writes nothing
twice. What this buffer cannot survive is a crash of the gateway process: the metering
issue moves it to a durable spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError

FLUSH_INTERVAL_S = 0.25
FLUSH_BATCH = 2000
MAX_BUFFERED = 1_000_000

log = logging.getLogger("switchboard.usage")
# One writer thread: one long-lived database connection, batches written in order.
_writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    organization_id: str
    at: datetime
    key_id: str
    endpoint: str
    model: str
    route: str
    target: str
    deployment_id: str
    region: str
    status: int
    error_code: str
    streamed: bool
    attempts: int
    input_tokens: int
    output_tokens: int
    latency_ms: float
    ttft_ms: float | None
    cost: Decimal


class UsageBuffer:
    def __init__(self) -> None:
        self._pending: deque[UsageRecord] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self.dropped = 0

    def submit(self, record: UsageRecord) -> None:
        if len(self._pending) >= MAX_BUFFERED:
            # Memory is the limit of an in-process buffer; say so rather than grow forever.
            self.dropped += 1
            log.error("usage buffer full; dropped event %s", record.request_id)
            return
        self._pending.append(record)
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._run())
        elif len(self._pending) >= FLUSH_BATCH and self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), FLUSH_INTERVAL_S)
            except TimeoutError:
                pass
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> int:
        written = 0
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(FLUSH_BATCH, len(self._pending)))]
            try:
                await asyncio.get_running_loop().run_in_executor(_writer_thread, write_batch, batch)
            except Exception:  # noqa: BLE001 - any failure: keep the events, retry next tick
                log.exception("writing %d usage events failed; will retry", len(batch))
                self._pending.extendleft(reversed(batch))
                return written
            written += len(batch)
        return written

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        await self.flush()


_COLUMNS = [f.name for f in fields(UsageRecord)]
_AT, _COST = _COLUMNS.index("at"), _COLUMNS.index("cost")


def write_batch(records: list[UsageRecord]) -> None:
    """One multi-row INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL both speak
    it): no model instances, and a request id already written is skipped."""
    from routing.cache import drop_broken_connection

    drop_broken_connection()
    try:
        _insert(records)
    except IntegrityError:
        # The one foreign key is the organization: one deleted since the request (its
        # usage goes with it) must not block everyone else's events forever.
        from console.models import Organization

        live = set(Organization.objects.filter(pk__in={r.organization_id for r in records}).values_list("pk", flat=True))
        kept = [record for record in records if record.organization_id in live]
        log.warning("dropped %d usage events of deleted organizations", len(records) - len(kept))
        _insert(kept)


def _insert(records: list[UsageRecord]) -> None:
    from django.db import connection

    from billing.models import UsageEvent

    if not records:
        return
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(UsageEvent._meta.get_field(name).column) for name in _COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    # SQLite allows 32,766 parameters per statement; 19 columns x 1,000 rows stays under.
    for start in range(0, len(records), 1000):
        chunk = records[start : start + 1000]
        params = [value for record in chunk for value in _row(record)]
        sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholders] * len(chunk))} ON CONFLICT (request_id) DO NOTHING"
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def _row(record: UsageRecord) -> tuple[object, ...]:
    from django.db import connection

    # Adapt what the raw cursor cannot take as is: datetimes for SQLite, Decimal everywhere.
    values = [getattr(record, name) for name in _COLUMNS]
    values[_AT] = connection.ops.adapt_datetimefield_value(values[_AT])
    values[_COST] = connection.ops.adapt_decimalfield_value(values[_COST], 24, 12)
    return tuple(values)


_buffer = UsageBuffer()


def submit(record: UsageRecord) -> None:
    """Hand a usage event to billing. Never blocks; call from the event loop."""
    _buffer.submit(record)


async def flush() -> int:
    return await _buffer.flush()


async def aclose() -> None:
    await _buffer.aclose()
