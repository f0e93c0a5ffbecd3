"""The gateway's entry point to metering: `record()` makes one usage event durable
(metering.spool) and returns; the ingester (metering.ingest) writes it to the database."""

from __future__ import annotations

from metering.records import UsageRecord
from metering.spool import UsageSink, make_sink

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
