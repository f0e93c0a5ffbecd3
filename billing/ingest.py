"""The usage ingester: moves usage events from the durable hand-off (billing.spool) into
the database in batches, acknowledging them only after the rows are committed.

At least once, deduplicated by request id: a batch written but not acknowledged (the
ingester died in between) is read again and adds nothing. `manage.py ingest_usage` runs
it; `manage.py up` starts one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import orjson
from django.db import DataError, IntegrityError
from django.db import Error as DatabaseError

from billing.records import UsageRecord
from billing.spool import SPOOL_SUFFIX, decode, from_dict, spool_directory, stream_key

log = logging.getLogger("switchboard.ingest")
READ_BYTES = 4 << 20
STREAM_GROUP = "ingest"


@dataclass
class Batch:
    records: list[UsageRecord]
    acknowledge: Callable[[], None]


# ---------------------------------------------------------------------------------------
# Sources


class SpoolSource:
    """Spool files: each has a sidecar `.offset` with how far it is in the database."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self) -> Batch | None:
        if not self.directory.exists():
            return None
        for path in sorted(self.directory.glob("*" + SPOOL_SUFFIX)):
            batch = self._read_file(path)
            if batch is not None:
                return batch
        return None

    def _read_file(self, path: Path) -> Batch | None:
        offset_path = path.with_suffix(".offset")
        offset = int(offset_path.read_text()) if offset_path.exists() else 0
        with open(path, "rb") as spool:
            spool.seek(offset)
            data = spool.read(READ_BYTES)
            if not data.endswith(b"\n") and b"\n" in data:
                data = data[: data.rindex(b"\n") + 1]
            elif b"\n" not in data:
                data = b""
            if not data:
                if _finished(spool.fileno()):
                    # Everything up to the last complete line is in; a partial last line
                    # is an event whose write was cut, so its answer was never sent.
                    path.unlink(missing_ok=True)
                    offset_path.unlink(missing_ok=True)
                return None
        records = []
        for line in data.splitlines():
            try:
                records.append(decode(line))
            except (ValueError, TypeError, KeyError) as error:
                log.error("skipping an unreadable usage line in %s: %s", path.name, error)
        end = offset + len(data)

        def acknowledge() -> None:
            temporary = offset_path.with_suffix(".offset.tmp")
            temporary.write_text(str(end))
            os.replace(temporary, offset_path)

        return Batch(records, acknowledge)


def _finished(fd: int) -> bool:
    """True when no gateway process holds the file (its writer closed it or died)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


class StreamSource:
    """The Redis stream, through a consumer group. On start it first re-reads what this
    consumer was given and never acknowledged (a previous run that died mid-batch)."""

    def __init__(self, url: str, key: str, consumer: str | None = None, block_ms: int = 200) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.key = key
        self.consumer = consumer or socket.gethostname()
        self.block_ms = block_ms
        self._backlog = True
        try:
            self.redis.xgroup_create(self.key, STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def read(self) -> Batch | None:
        start = "0" if self._backlog else ">"
        reply = self.redis.xreadgroup(STREAM_GROUP, self.consumer, {self.key: start}, count=100, block=None if self._backlog else self.block_ms)
        entries = reply[0][1] if reply else []
        if self._backlog and not entries:
            self._backlog = False
            return None
        if not entries:
            return None
        ids = [entry_id for entry_id, _ in entries]
        records = [decode_event for _, fields_ in entries for decode_event in _decode_entry(fields_)]

        def acknowledge() -> None:
            pipe = self.redis.pipeline()
            pipe.xack(self.key, STREAM_GROUP, *ids)
            pipe.xdel(self.key, *ids)
            pipe.execute()

        return Batch(records, acknowledge)


def _decode_entry(entry: dict[bytes, bytes]) -> list[UsageRecord]:
    return [from_dict(item) for item in orjson.loads(entry[b"e"])]


# ---------------------------------------------------------------------------------------
# Writing


_COLUMNS = [f.name for f in fields(UsageRecord)]
_AT, _COST = _COLUMNS.index("at"), _COLUMNS.index("cost")


def write_batch(records: list[UsageRecord]) -> None:
    """Multi-row INSERT ... ON CONFLICT (request_id) DO NOTHING: a request id already
    written is skipped, so replays change nothing. A batch the database refuses is split
    until the refused rows are found, so one bad event (an organization deleted since the
    request, a figure out of range) never blocks the others; those are logged and dropped."""
    try:
        _insert(records)
    except (IntegrityError, DataError) as error:
        if len(records) == 1:
            log.error("dropping usage event %s the database refuses: %s", records[0].request_id, error)
            return
        middle = len(records) // 2
        write_batch(records[:middle])
        write_batch(records[middle:])


def _insert(records: list[UsageRecord]) -> None:
    from django.db import connection, transaction

    from billing import rollups
    from billing.models import UsageEvent

    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(UsageEvent._meta.get_field(name).column) for name in _COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    with transaction.atomic():
        new_ids: set[str] = set()
        # SQLite allows 32,766 parameters per statement; 19 columns x 1,000 rows fit.
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            params = [value for record in chunk for value in _row(record, connection)]
            sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholders] * len(chunk))} ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                new_ids.update(row[0] for row in cursor.fetchall())
        # Only what was new adds to the rollups: replays and duplicates add nothing.
        seen: set[str] = set()
        fresh = [r for r in records if r.request_id in new_ids and not (r.request_id in seen or seen.add(r.request_id))]  # type: ignore[func-returns-value]
        rollups.apply(fresh)


def _row(record: UsageRecord, connection: object) -> list[object]:
    values = [getattr(record, name) for name in _COLUMNS]
    values[_AT] = connection.ops.adapt_datetimefield_value(values[_AT])  # type: ignore[attr-defined]
    values[_COST] = connection.ops.adapt_decimalfield_value(values[_COST], 24, 12)  # type: ignore[attr-defined]
    return values


# ---------------------------------------------------------------------------------------
# The loop


def sources() -> list[SpoolSource | StreamSource]:
    from django.conf import settings

    found: list[SpoolSource | StreamSource] = [SpoolSource(spool_directory())]
    if settings.REDIS_URL:
        found.append(StreamSource(settings.REDIS_URL, stream_key()))
    return found


def ingest_available(found: list[SpoolSource | StreamSource]) -> int:
    """One pass over every source; returns how many events were written."""
    from django.db import close_old_connections

    written = 0
    for source in found:
        while (batch := source.read()) is not None:
            try:
                if batch.records:
                    write_batch(batch.records)
            except DatabaseError:
                close_old_connections()
                raise
            batch.acknowledge()
            written += len(batch.records)
    return written


def run_forever(idle_sleep_s: float = 0.1, batch_pause_s: float = 0.5) -> None:
    """Polls the stores. After writing, it pauses so the next batch is bigger: rollup work
    is per batch, and on a busy machine the ingester's CPU is the gateway's loss. Usage
    reaches the database within about half a second plus the write."""
    from redis.exceptions import RedisError

    found: list[SpoolSource | StreamSource] | None = None
    while True:
        try:
            found = found or sources()
            time.sleep(batch_pause_s if ingest_available(found) else idle_sleep_s)
        except DatabaseError as error:
            log.warning("database unavailable; usage waits in its durable store: %s", error)
            time.sleep(1.0)
        except (OSError, RedisError) as error:
            log.warning("usage store unavailable: %s", error)
            found = None  # reconnect
            time.sleep(1.0)
