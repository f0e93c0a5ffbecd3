"""The durable hand-off of usage events from the gateway to the database.

The gateway appends each event before it sends the last byte of the answer, so an answer
the client received always has its event in durable storage first. The ingester
(metering.ingest, `manage.py ingest_usage`) moves events into the database in batches,
and only then acknowledges them; rows are unique by request id, so anything delivered
twice is written once. The window of loss for a crash of a gateway or ingester process
is zero; for a crash of the whole machine it is what the operating system had not yet
flushed to disk (the embedded default) or what Redis had not persisted (its own
`appendfsync` setting).

Two stores, chosen by the environment:
- embedded default: append-only spool files under SWITCHBOARD_DATA_DIR/usage-spool, one
  per gateway process, each line one event. A write of one line costs a few microseconds
  (it lands in the page cache, which survives the process). The writer holds an
  exclusive flock on its file; a file nobody holds is finished, and the ingester deletes
  it once every line is in the database.
- REDIS_URL: a Redis stream (`sb:usage:<database>`), read by a consumer group. Events of requests
  finishing together are added in one XADD (group commit), so a busy gateway pays one
  round trip per batch, and each request waits at most for that one round trip.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import socket
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.db import connection

from metering.records import UsageRecord

SPOOL_ROTATE_BYTES = 64 << 20
SPOOL_SUFFIX = ".events"
# Earlier versions spooled JSON lines (and streamed JSON arrays); they are still read.
LEGACY_SPOOL_SUFFIX = ".jsonl"

# An event on the wire is one line of PostgreSQL's COPY text format: the fields of
# UsageRecord in order, tab-separated, so the database takes spooled lines as they are
# (parsing JSON in SQL cost as much as inserting the row). Text is escaped as COPY reads it.
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
FIELD_COUNT = 21
# Earlier versions' lines lack the last fields (served_model, then charge); they are still read.
LEGACY_FIELD_COUNTS = (19, 20)


def encode(record: UsageRecord) -> bytes:
    r = record
    return "\t".join(
        (
            r.request_id.translate(_ESCAPE), r.organization_id.translate(_ESCAPE), r.at.isoformat(), r.key_id.translate(_ESCAPE),
            r.endpoint.translate(_ESCAPE), r.model.translate(_ESCAPE), r.route.translate(_ESCAPE), r.target.translate(_ESCAPE),
            r.deployment_id.translate(_ESCAPE), r.region.translate(_ESCAPE), str(r.status), r.error_code.translate(_ESCAPE),
            "t" if r.streamed else "f", str(r.attempts), str(r.input_tokens), str(r.output_tokens), repr(float(r.latency_ms)),
            "\\N" if r.ttft_ms is None else repr(float(r.ttft_ms)), str(r.cost), r.served_model.translate(_ESCAPE),
            "\\N" if r.charge is None else str(r.charge),
        )
    ).encode()  # fmt: skip


def is_json(payload: bytes) -> bool:
    """True for a payload of an earlier version: a JSON event or a JSON array of them."""
    return payload[:1] in (b"{", b"[")


def decode(line: bytes) -> UsageRecord:
    if is_json(line):
        return from_dict(orjson.loads(line))
    values = [_unescape(value) for value in line.decode().split("\t")]
    if len(values) in LEGACY_FIELD_COUNTS:
        values += ["", "\\N"][len(values) - FIELD_COUNT :]
    if len(values) != FIELD_COUNT:
        raise ValueError(f"a usage line has {len(values)} fields, not {FIELD_COUNT}")
    (request_id, organization_id, at, key_id, endpoint, model, route, target, deployment_id, region, status, error_code, streamed, attempts,
     input_tokens, output_tokens, latency_ms, ttft_ms, cost, served_model, charge) = values  # fmt: skip
    return UsageRecord(
        request_id, organization_id, datetime.fromisoformat(at), key_id, endpoint, model, route, target, deployment_id, region,
        int(status), error_code, streamed == "t", int(attempts), int(input_tokens), int(output_tokens), float(latency_ms),
        None if ttft_ms == "\\N" else float(ttft_ms), Decimal(cost), served_model, None if charge == "\\N" else Decimal(charge),
    )  # fmt: skip


def _unescape(value: str) -> str:
    if "\\" not in value or value == "\\N":
        return value
    out, characters = [], iter(value)
    for character in characters:
        out.append(_UNESCAPE[next(characters)] if character == "\\" else character)
    return "".join(out)


def from_dict(data: dict[str, Any]) -> UsageRecord:
    data["at"] = datetime.fromisoformat(data["at"])
    data["cost"] = Decimal(data["cost"])
    if data.get("charge") is not None:
        data["charge"] = Decimal(data["charge"])
    return UsageRecord(**data)


class UsageSink(Protocol):
    async def append(self, record: UsageRecord) -> None: ...

    async def aclose(self) -> None: ...


class SpoolSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0

    def _open(self) -> None:
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SPOOL_SUFFIX}"
        self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._size = 0

    async def append(self, record: UsageRecord) -> None:
        if self._fd < 0 or self._size >= SPOOL_ROTATE_BYTES:
            self._close()
            self._open()
        line = encode(record) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # a short write to a regular file means a full disk
            raise OSError(f"usage spool: wrote {written} of {len(line)} bytes")
        self._size += written

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock: the file is finished
            self._fd = -1

    async def aclose(self) -> None:
        self._close()


class StreamSink:
    """Group commit onto a Redis stream: every event appended during one turn of the event
    loop goes out in one XADD, and each of their requests waits for that one reply. If
    Redis cannot take them, they go to this machine's spool instead (the ingester reads
    both), so an outage of Redis costs no usage and no answers."""

    def __init__(self, url: str, key: str, fallback: SpoolSink) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self._key = key
        self._fallback = fallback
        self._pending: list[UsageRecord] = []
        self._done: asyncio.Future[None] | None = None

    async def append(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_soon(lambda: asyncio.ensure_future(self._commit()))
        await asyncio.shield(self._done)

    async def _commit(self) -> None:
        events, self._pending = self._pending, []
        done, self._done = self._done, None
        assert done is not None
        try:
            await self._redis.xadd(self._key, {"e": b"\n".join(encode(event) for event in events)})
        except Exception:  # noqa: BLE001 - any Redis failure: keep the events locally
            try:
                for event in events:
                    await self._fallback.append(event)
            except OSError as error:
                done.set_exception(error)
                done.exception()  # retrieved here; each waiter re-raises it through shield
                return
        done.set_result(None)

    async def aclose(self) -> None:
        await self._fallback.aclose()
        await self._redis.aclose()


def database_identity() -> str:
    """Usage belongs to one database: spools and streams are named after it, so two
    platforms sharing a machine or a Redis (a test run beside `up`) never mix events."""
    db = connection.settings_dict
    # By name, not address: a proxy or a replica in front of the same database is the same.
    where = f"{db['ENGINE']}|{Path(str(db['NAME'])).resolve() if db['ENGINE'].endswith('sqlite3') else db['NAME']}"
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def spool_directory() -> Path:
    return Path(settings.DATA_DIR) / "usage-spool" / database_identity()


def stream_key() -> str:
    return f"sb:usage:{database_identity()}"


def make_sink() -> UsageSink:
    spool = SpoolSink(spool_directory())
    return StreamSink(settings.REDIS_URL, stream_key(), spool) if settings.REDIS_URL else spool
