"""The gateway's entry point to billing: `record()` makes one usage event durable
(billing.spool) and returns; the ingester (billing.ingest) writes it to the database."""

from __future__ import annotations

from billing.records import UsageRecord
from billing.spool import UsageSink, make_sink

__all__ = ["UsageRecord", "record", "aclose"]

_sink: UsageSink | None = None


async def record(event: UsageRecord) -> None:
    """Call before the answer's last byte is sent: once this returns, the event survives
    a crash of this process."""
    global _sink
    if _sink is None:
        _sink = make_sink()
    await _sink.append(event)


async def aclose() -> None:
    global _sink
    if _sink is not None:
        await _sink.aclose()
        _sink = None
