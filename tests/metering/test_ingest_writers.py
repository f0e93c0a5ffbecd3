"""The ingester with several writers (PostgreSQL): batches split by organization, written
on parallel connections while the next batch is read, acknowledged in order, and
nothing lost or doubled when a part fails."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import OperationalError, connection

from metering import ingest
from metering.models import UsageEvent, UsageRollup
from metering.records import UsageRecord
from metering.spool import SPOOL_SUFFIX, SpoolSink, encode
from tests.conftest import Tenants
from tests.metering.test_usage_pipeline import _record

pytestmark = [
    pytest.mark.django_db(transaction=True),  # each writer has its own connection
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="several writers are the PostgreSQL path"
    ),
]


@pytest.fixture(autouse=True)
def _writer_connections_closed() -> Iterator[None]:
    yield
    # Each writer thread holds a connection; close them, or the test database cannot go.
    barrier = threading.Barrier(2)

    def close() -> None:
        barrier.wait(timeout=5)
        connection.close()

    for done in [ingest._pool(2).submit(close) for _ in range(2)]:
        done.result()


def _records(tenants: Tenants, count: int) -> list[UsageRecord]:
    return [_record((tenants.org_a if n % 3 else tenants.org_b).pk, f"req_{n}", input_tokens=n) for n in range(count)]


def _spool(directory: Path, records: list[UsageRecord]) -> None:
    async def write() -> None:
        sink = SpoolSink(directory)
        for record in records:
            await sink.append(record)
        await sink.aclose()  # finished: the ingester may delete the file once it is in

    asyncio.run(write())


def _rolled_requests(tenants: Tenants) -> dict[str, int]:
    rows = UsageRollup.objects.unscoped_across_tenants().filter(granularity="day", breakdown="none")
    return {tenants.org_a.pk: 0, tenants.org_b.pk: 0, **dict(rows.values_list("organization_id", "requests"))}


def test_several_writers_write_every_event_once_in_small_pipelined_batches(
    tenants: Tenants, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "READ_BYTES", 4_000)  # about ten events a batch: many batches in flight
    _spool(tmp_path, _records(tenants, 300))
    assert ingest.ingest_available([ingest.SpoolSource(tmp_path)], workers=2) == 300
    assert UsageEvent.objects.for_org(tenants.org_a).count() == 200
    assert UsageEvent.objects.for_org(tenants.org_b).count() == 100
    assert _rolled_requests(tenants) == {tenants.org_a.pk: 200, tenants.org_b.pk: 100}
    assert not list(tmp_path.iterdir())  # finished and fully acknowledged: gone


def test_a_failed_part_leaves_its_batch_and_every_later_one_to_the_next_pass(
    tenants: Tenants, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "READ_BYTES", 4_000)
    _spool(tmp_path, _records(tenants, 300))
    write = ingest.write_payloads
    failures = []

    def failing_once(payloads: list[bytes]) -> None:
        if not failures and any(payload.startswith(b"req_150\t") for payload in payloads):
            failures.append(len(payloads))
            raise OperationalError("connection lost mid-batch")
        write(payloads)

    monkeypatch.setattr(ingest, "write_payloads", failing_once)
    source = ingest.SpoolSource(tmp_path)
    with pytest.raises(OperationalError):
        ingest.ingest_available([source], workers=2)
    assert failures
    acknowledged = int(next(tmp_path.glob("*.offset")).read_text())
    spooled = next(tmp_path.glob("*" + SPOOL_SUFFIX)).read_bytes()
    assert b"\nreq_150\t" in spooled[acknowledged - 1 :]  # the failed batch is not behind the offset
    assert UsageEvent.objects.unscoped_across_tenants().filter(request_id="req_150").count() == 0

    assert ingest.ingest_available([source], workers=2) > 0  # the same source, rewound
    assert UsageEvent.objects.unscoped_across_tenants().count() == 300
    assert _rolled_requests(tenants) == {tenants.org_a.pk: 200, tenants.org_b.pk: 100}  # parts written twice added nothing


def test_batches_split_into_parts_of_about_the_same_size_without_sharing_an_organization() -> None:
    lines = [encode(_record(f"org_{n % 7}", f"req_{n}")) for n in range(700)]
    parts = ingest.split_by_organization(lines, 2)
    assert sorted(len(part) for part in parts) == [300, 400]  # seven organizations of 100: 4 and 3
    organizations = [{line.split(b"\t")[1] for line in part} for part in parts]
    assert not organizations[0] & organizations[1]


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis stream needs REDIS_URL")
def test_a_stream_batch_that_failed_is_read_again_by_the_same_ingester(tenants: Tenants, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    key = f"sb:usage:test:{os.urandom(4).hex()}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for n in range(3):
            entry = b"\n".join(encode(_record(tenants.org_a.pk, f"req_{n}_{i}")) for i in range(5))
            client.xadd(key, {"e": entry})
        source = ingest.StreamSource(settings.REDIS_URL, key, consumer="test")
        assert ingest.ingest_available([source], workers=2) == 15
        client.xadd(key, {"e": encode(_record(tenants.org_b.pk, "req_late"))})
        monkeypatch.setattr(ingest, "write_payloads", lambda payloads: (_ for _ in ()).throw(OperationalError("database down")))
        with pytest.raises(OperationalError):
            ingest.ingest_available([source], workers=2)
        monkeypatch.undo()
        assert ingest.ingest_available([source], workers=2) == 1  # not left pending until a restart
        assert UsageEvent.objects.for_org(tenants.org_b).count() == 1
        assert client.xpending(key, ingest.STREAM_GROUP)["pending"] == 0
    finally:
        client.delete(key)
        connection.close()
