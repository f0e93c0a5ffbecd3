"""The usage ingester SIGKILLed mid-batch, for real: 20,000 events in the durable store the
gateways write to (the spool on the embedded default, the Redis stream with Redis), a
`manage.py ingest_usage` process killed while it writes them, a new one started.
Expected: every event stored, none twice, and the rollups the pages and invoices read
count each exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from metering.models import Breakdown, Granularity, UsageEvent, UsageRollup
from metering.spool import make_sink
from tests.conftest import Tenants
from tests.metering.test_usage_pipeline import _record
from tests.servers import child_database_url, child_env, usage_ingester

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVENTS = 20_000


async def _emit(org_id: str) -> None:
    sink = make_sink()
    try:
        for start in range(0, EVENTS, 500):  # as a busy gateway does: many requests per loop turn
            await asyncio.gather(*(sink.append(_record(org_id, f"req_kill_{n:05d}")) for n in range(start, start + 500)))
    finally:
        await sink.aclose()


def _writing() -> bool:
    """The ingester holds a write transaction open right now."""
    if connection.vendor == "sqlite":
        probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:  # the write lock is held
            return True
        finally:
            probe.close()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND xact_start IS NOT NULL AND backend_type = 'client backend'"
        )
        return bool(cursor.fetchone()[0])


def test_an_ingester_killed_mid_batch_loses_nothing_and_writes_nothing_twice(tenants: Tenants) -> None:
    asyncio.run(_emit(tenants.org_a.pk))
    events = UsageEvent.objects.for_org(tenants.org_a)

    with usage_ingester(child_env(DATABASE_URL=child_database_url())) as first:
        deadline = time.monotonic() + 120
        # The stream is read 5,000 events at a time: kill it after one batch is in and
        # acknowledged, inside the next. The spool is read whole: kill it inside that one.
        several_batches = bool(settings.REDIS_URL)
        while not (_writing() and (events.exists() or not several_batches)) and time.monotonic() < deadline:
            time.sleep(0.002)
        first.kill()  # SIGKILL, inside its write transaction: no handler runs, nothing is acknowledged
        first.wait()
    stored_at_kill = events.count()
    assert stored_at_kill < EVENTS, "the ingester had finished before it was killed"

    with usage_ingester(child_env(DATABASE_URL=child_database_url())):
        deadline = time.monotonic() + 120
        while events.count() < EVENTS and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # anything written twice would land now
    print(f"killed with {stored_at_kill} of {EVENTS} stored; after a restart {events.count()}")
    assert events.count() == EVENTS
    assert events.values("request_id").distinct().count() == EVENTS
    hours = UsageRollup.objects.for_org(tenants.org_a).filter(granularity=Granularity.HOUR, breakdown=Breakdown.ALL)
    assert hours.aggregate(requests=Sum("requests"), output=Sum("output_tokens")) == {"requests": EVENTS, "output": EVENTS * 20}
