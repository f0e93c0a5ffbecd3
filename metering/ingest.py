"""The usage ingester: moves usage events from the durable hand-off (metering.spool) into
the database in batches, acknowledging them only after the rows are committed.

At least once, deduplicated by request id: a batch written but not acknowledged (the
ingester died in between) is read again and adds nothing. `manage.py ingest_usage` runs
it; `manage.py up` starts one.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db import Error as DatabaseError

from metering import copy_events, rollups
from metering.models import UsageEvent
from metering.records import UsageRecord
from metering.spool import LEGACY_SPOOL_SUFFIX, SPOOL_SUFFIX, decode, encode, from_dict, is_json, spool_directory, stream_key
from tenancy.models import Organization

if TYPE_CHECKING:
    from django.db.models import Field

log = logging.getLogger("switchboard.ingest")
# A batch's rollup rows cost about the same however many events it holds, so a backlog
# is read in big batches; under normal load a batch is what arrived since the last.
READ_BYTES = 64 << 20
STREAM_GROUP = "ingest"


@dataclass
class Batch:
    payloads: list[bytes]  # as handed over: an event line (spool), or lines (a stream entry)
    events: int  # how many events the payloads hold, at most
    acknowledge: Callable[[], None]


# ---------------------------------------------------------------------------------------
# Sources


class SpoolSource:
    """Spool files: each has a sidecar `.offset` with how far it is in the database. Reads
    run ahead of the acknowledgements (the next batch is read while the last is written);
    `rewind` goes back to what is acknowledged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._read_to: dict[Path, int] = {}

    def rewind(self) -> None:
        self._read_to.clear()

    def read(self) -> Batch | None:
        if not self.directory.exists():
            return None
        for path in sorted([*self.directory.glob("*" + SPOOL_SUFFIX), *self.directory.glob("*" + LEGACY_SPOOL_SUFFIX)]):
            batch = self._read_file(path)
            if batch is not None:
                return batch
        return None

    def _read_file(self, path: Path) -> Batch | None:
        offset_path = path.with_suffix(".offset")
        acknowledged = int(offset_path.read_text()) if offset_path.exists() else 0
        offset = max(acknowledged, self._read_to.get(path, 0))
        with open(path, "rb") as spool:
            spool.seek(offset)
            data = spool.read(READ_BYTES)
            if not data.endswith(b"\n") and b"\n" in data:
                data = data[: data.rindex(b"\n") + 1]
            elif b"\n" not in data:
                data = b""
            if not data:
                if offset == acknowledged and _finished(spool.fileno()):
                    # Everything up to the last complete line is in; a partial last line
                    # is an event whose write was cut, so its answer was never sent.
                    path.unlink(missing_ok=True)
                    offset_path.unlink(missing_ok=True)
                    self._read_to.pop(path, None)
                return None
        lines = data.splitlines()
        end = self._read_to[path] = offset + len(data)

        def acknowledge() -> None:
            temporary = offset_path.with_suffix(".offset.tmp")
            temporary.write_text(str(end))
            os.replace(temporary, offset_path)

        return Batch(lines, len(lines), acknowledge)


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
        self.rewind()
        try:
            self.redis.xgroup_create(self.key, STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def rewind(self) -> None:
        # What this consumer was given and did not acknowledge comes first.
        self._backlog, self._backlog_after = True, "0"

    def read(self) -> Batch | None:
        entries: list[Any] = []
        if self._backlog:
            # From the pending list, past what this pass already took (reads run ahead).
            entries = self._read(self._backlog_after, block=None)
            if entries:
                self._backlog_after = entries[-1][0]
            else:
                self._backlog = False
        if not entries:
            entries = self._read(">", block=self.block_ms)
        if not entries:
            return None
        ids = [entry_id for entry_id, _ in entries]
        payloads = [fields_[b"e"] for _, fields_ in entries]

        def acknowledge() -> None:
            pipe = self.redis.pipeline()
            pipe.xack(self.key, STREAM_GROUP, *ids)
            pipe.xdel(self.key, *ids)
            pipe.execute()

        # An entry holds the events of one group commit, a line each (or, from an earlier
        # version, a JSON array of them).
        return Batch(
            payloads,
            sum(payload.count(b'"request_id"') if is_json(payload) else payload.count(b"\n") + 1 for payload in payloads),
            acknowledge,
        )

    def _read(self, start: str | bytes, block: int | None) -> list[Any]:
        # redis-py types the reply as a union of every command shape; this one is
        # [[stream, [(entry_id, {field: value}), ...]]].
        reply: Any = self.redis.xreadgroup(STREAM_GROUP, self.consumer, {self.key: start}, count=5000, block=block)
        return list(reply[0][1]) if reply else []


# ---------------------------------------------------------------------------------------
# Writing


def write_payloads(payloads: list[bytes]) -> None:
    """Writes events as they were handed over: each payload one event line (spool), several
    (a stream entry), or an earlier version's JSON event or array."""
    if connection.vendor == "postgresql":
        try:
            copy_events.write(payloads)
            return
        except (IntegrityError, DataError) as error:
            log.warning("a usage batch was refused as a whole (%s); writing it in parts", error)
    write_batch(decode_payloads(payloads), bulk=False)


def write_batch(records: list[UsageRecord], bulk: bool = True) -> None:
    """Writes events, each once: a request id already written is skipped, so replays change
    nothing. On PostgreSQL the batch goes through COPY (metering.copy_events). A batch the
    database refuses is split until the refused rows are found, so one bad event (an
    organization deleted since the request, a figure out of range) never blocks the
    others; those are logged and dropped."""
    if bulk and connection.vendor == "postgresql":
        write_payloads([encode(record) for record in records])
        return
    try:
        _insert(records)
    except (IntegrityError, DataError) as error:
        if len(records) == 1:
            log.error("dropping usage event %s the database refuses: %s", records[0].request_id, error)
            return
        middle = len(records) // 2
        write_batch(records[:middle], bulk=False)
        write_batch(records[middle:], bulk=False)


def decode_payloads(payloads: list[bytes]) -> list[UsageRecord]:
    records: list[UsageRecord] = []
    for payload in payloads:
        try:
            if is_json(payload):
                items = orjson.loads(payload)
                records.extend(from_dict(item) for item in (items if isinstance(items, list) else [items]))
                continue
        except (ValueError, TypeError, KeyError) as error:
            log.error("skipping an unreadable usage payload: %s", error)
            continue
        for line in payload.split(b"\n"):
            try:
                records.append(decode(line))
            except (ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
                log.error("skipping an unreadable usage line: %s", error)
    return records


_COLUMNS = [f.name for f in fields(UsageRecord)]
_AT, _COST, _CHARGE = _COLUMNS.index("at"), _COLUMNS.index("cost"), _COLUMNS.index("charge")


def _insert(records: list[UsageRecord]) -> None:
    """Multi-row INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING, then the new
    events into the rollups in Python, in one transaction."""
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(cast("Field[Any, Any]", UsageEvent._meta.get_field(name)).column) for name in _COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"

    known = set(Organization.objects.filter(pk__in={r.organization_id for r in records}).values_list("pk", flat=True))
    for record in records:
        if record.organization_id not in known:
            log.error("dropping usage event %s of organization %s, which no longer exists", record.request_id, record.organization_id)
    records = [record for record in records if record.organization_id in known]
    with transaction.atomic():
        new_ids: set[str] = set()
        # SQLite allows 32,766 parameters per statement; 19 columns x 1,000 rows fit.
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            params: list[Any] = [value for record in chunk for value in _row(record, connection)]
            values = ", ".join([placeholders] * len(chunk))
            sql = f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
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
    if values[_CHARGE] is not None:
        values[_CHARGE] = connection.ops.adapt_decimalfield_value(values[_CHARGE], 24, 12)  # type: ignore[attr-defined]
    return values


# ---------------------------------------------------------------------------------------
# The loop


def sources() -> list[SpoolSource | StreamSource]:
    found: list[SpoolSource | StreamSource] = [SpoolSource(spool_directory())]
    if settings.REDIS_URL:
        found.append(StreamSource(settings.REDIS_URL, stream_key()))
    return found


def ingest_available(found: list[SpoolSource | StreamSource], workers: int = 1) -> int:
    """One pass over every source; returns how many events were written. With several
    workers, each batch is split by organization and its parts are written at once on
    separate connections (parts that share an organization, as stream entries or two
    batches in flight can, wait only for its rollup lock), while the next batch is read; a batch is acknowledged when every part is
    committed. A part that fails leaves its batch unacknowledged: the next pass reads it
    again (sources rewind to what is acknowledged), and the parts already written add
    nothing."""
    written = 0
    for source in found:
        source.rewind()
        if workers <= 1:
            while (batch := source.read()) is not None:
                if batch.payloads:
                    _write_part(batch.payloads)
                batch.acknowledge()
                written += batch.events
            continue
        # The next batch is read and queued while the last is written, so no worker waits
        # for the slowest part of a batch. Batches are acknowledged in order.
        in_flight: deque[tuple[Batch, list[Future[None]]]] = deque()
        try:
            while True:
                batch = source.read()
                if batch is not None:
                    in_flight.append(
                        (batch, [_pool(workers).submit(_write_part, part) for part in split_by_organization(batch.payloads, workers)])
                    )
                if len(in_flight) > 1 or (batch is None and in_flight):
                    written += _finish(*in_flight.popleft())
                elif batch is None:
                    break
        except BaseException:
            # Let the parts still running end; nothing after a failed batch is acknowledged,
            # so the next pass reads it (and what followed) again.
            wait([part for _, parts in in_flight for part in parts])
            raise
    return written


def _finish(batch: Batch, parts: list[Future[None]]) -> int:
    """Waits for every part of the batch; acknowledges it if all were committed."""
    wait(parts)
    for part in parts:
        part.result()  # raises the first part's error: the batch stays unacknowledged
    batch.acknowledge()
    return batch.events


def split_by_organization(payloads: list[bytes], parts: int) -> list[list[bytes]]:
    """Splits a batch into at most `parts` parts of about the same size, no organization
    in two parts (as far as the payloads tell)."""
    if parts <= 1:
        return [payloads]
    by_organization: dict[bytes, list[bytes]] = {}
    for index, payload in enumerate(payloads):
        by_organization.setdefault(_organization_of(payload) or b"%d" % index, []).append(payload)
    split: list[list[bytes]] = [[] for _ in range(parts)]
    for group in sorted(by_organization.values(), key=len, reverse=True):  # largest first, to the smallest part
        min(split, key=len).extend(group)
    return [part for part in split if part]


def _organization_of(payload: bytes) -> bytes | None:
    """The organization of a spool line (one event), found without parsing the line. A
    stream entry holds several events, of any organizations: None. Rollup writers lock
    organizations, so two parts holding one are merely serialised."""
    if payload[:1] == b"{":  # an earlier version's JSON line
        start = payload.find(b'"organization_id":"')
        return payload[start + 19 : payload.find(b'"', start + 19)] if start >= 0 else None
    if payload[:1] == b"[" or b"\n" in payload:
        return None
    first = payload.find(b"\t")
    return payload[first + 1 : payload.find(b"\t", first + 1)]


def _write_part(payloads: list[bytes]) -> None:
    try:
        write_payloads(payloads)
    except DatabaseError:
        connection.close()  # this thread's connection; the next write opens a fresh one
        raise


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    # Threads suffice: the work is in the database, and psycopg releases the GIL while it waits.
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")


def default_workers() -> int:
    """One writer per core on PostgreSQL; SQLite takes one writer at a time."""

    return max(1, min(4, os.cpu_count() or 1)) if connection.vendor == "postgresql" else 1


def run_forever(workers: int = 1, idle_sleep_s: float = 0.1, batch_pause_s: float = 0.5) -> None:
    """Polls the stores. After writing, it pauses so the next batch is bigger: rollup work
    is per batch, and on a busy machine the ingester's CPU is the gateway's loss. Usage
    reaches the database within about half a second plus the write."""
    from redis.exceptions import RedisError

    found: list[SpoolSource | StreamSource] | None = None
    while True:
        try:
            found = found or sources()
            time.sleep(batch_pause_s if ingest_available(found, workers) else idle_sleep_s)
        except DatabaseError as error:
            log.warning("database unavailable; usage waits in its durable store: %s", error)
            time.sleep(1.0)
        except (OSError, RedisError) as error:
            log.warning("usage store unavailable: %s", error)
            found = None  # reconnect
            time.sleep(1.0)
