"""`manage.py bench metering`: the usage pipeline's ingest rate and the usage page's query
time, on PostgreSQL.

It works in its own database (`switchboard_bench_metering`, created and migrated on the
PostgreSQL of DATABASE_URL, or of 127.0.0.1:5432 when DATABASE_URL is not PostgreSQL), in
a child process so the caller's database is never touched.

- Ingest: events for 20 tenants, as a busy gateway hands them over (spool files, a line
  each, timestamps 40 µs apart), then metering.ingest drains them: durable in the table,
  deduplicated by request id, and rolled up per minute, hour and day, committed. The
  events are then replayed, which must add nothing.
- Query: one tenant with 10 million events over 30 days (generated once in SQL and written
  through the same insert-and-roll-up path, then kept), and the queries the Usage page makes
  for a 30-day range: totals and a daily series in the viewer's time zone, plain and
  split by model.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction

from metering import ingest, selectors
from metering.copy_events import insert_and_roll_up
from metering.models import Granularity, UsageEvent, UsageRollup
from metering.records import UsageRecord
from metering.spool import SPOOL_SUFFIX, encode
from tenancy.models import Organization

BENCH_DATABASE = "switchboard_bench_metering"
INGEST_EVENTS = 600_000
QUERY_EVENTS = 10_000_000
QUERY_DAYS = 30
QUERY_RUNS = 30
MODELS = ("llama-3.1-70b", "smollm2-135m", "gpt-4o-mini", "minilm-embed")
REGIONS = ("us-east", "eu-west", "ap-south")
KEYS = 6


@dataclass
class MeteringFigures:
    ingest_events: int
    ingest_seconds: float
    replay_seconds: float
    query_events: int
    query_rollup_rows: int
    query_p50_ms: float
    query_p95_ms: float
    split_query_p50_ms: float
    split_query_p95_ms: float

    def as_json(self) -> dict[str, Any]:
        return {
            "ingest_events_per_s": round(self.ingest_events / self.ingest_seconds),
            "replay_events_per_s": round(self.ingest_events / self.replay_seconds),
            "usage_query_p95_ms": round(self.query_p95_ms, 2),
            "usage_query_split_by_model_p95_ms": round(self.split_query_p95_ms, 2),
            **asdict(self),
        }


def table(figures: MeteringFigures) -> str:
    data = figures.as_json()
    return "\n".join(
        [
            "| figure | measured | goal |",
            "|---|---|---|",
            f"| sustained ingest rate, durable, deduplicated, rolled up ({figures.ingest_events:,} events) "
            f"| {data['ingest_events_per_s']:,} events/s | >= 25,000 events/s |",
            f"| replay of the same events (adds nothing) | {data['replay_events_per_s']:,} events/s | printed |",
            f"| usage page query p95, one tenant, {QUERY_DAYS} days, {figures.query_events:,} events "
            f"| {figures.query_p95_ms:.1f} ms (p50 {figures.query_p50_ms:.1f}) | < 200 ms |",
            f"| the same, split by model | {figures.split_query_p95_ms:.1f} ms (p50 {figures.split_query_p50_ms:.1f}) | printed |",
            f"| rollup rows the {QUERY_DAYS}-day query reads | {figures.query_rollup_rows:,} | printed |",
        ]
    )


def run(seconds: float, log: Callable[[str], None]) -> MeteringFigures:
    del seconds  # sized by event counts, not time
    url = _bench_database_url()
    root = Path(settings.BASE_DIR)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    secret = "bench-" + os.urandom(16).hex()
    env.update(
        DATABASE_URL=url,
        SWITCHBOARD_NO_BOOTSTRAP="1",
        DJANGO_SETTINGS_MODULE="config.settings",
        SWITCHBOARD_DEBUG="false",  # production settings: no query log
        SWITCHBOARD_SECRET_KEY=secret,
        SWITCHBOARD_API_KEY_SECRET=secret + ":keys",
        SWITCHBOARD_PROVIDER_KEY_SECRETS=secret + ":providers",
        SWITCHBOARD_ALLOWED_HOSTS="127.0.0.1",
    )
    log(f"metering: migrating {BENCH_DATABASE}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True)
    child = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from benchmarks.metering import measure; measure()"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError("the metering benchmark failed; its errors are above")
    return MeteringFigures(**json.loads(child.stdout.strip().splitlines()[-1]))


def _bench_database_url() -> str:
    import psycopg

    configured = os.environ.get("DATABASE_URL", "")
    base = configured if configured.startswith(("postgres://", "postgresql://")) else "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres"))
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DATABASE]).fetchone():
                connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    except psycopg.Error as error:
        raise RuntimeError(
            f"bench metering measures on PostgreSQL and cannot reach it at {parts.hostname}:{parts.port or 5432} ({error}); "
            "start it or set DATABASE_URL"
        ) from None
    return urlunsplit(parts._replace(path="/" + BENCH_DATABASE))


# ---------------------------------------------------------------------------------------
# In the child, on the benchmark database


def measure() -> None:
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    ingest_seconds, replay_seconds = _measure_ingest(log)
    org = _query_tenant(log)
    rollup_rows, plain, split = _measure_queries(org, log)
    figures = MeteringFigures(
        ingest_events=INGEST_EVENTS,
        ingest_seconds=ingest_seconds,
        replay_seconds=replay_seconds,
        query_events=QUERY_EVENTS,
        query_rollup_rows=rollup_rows,
        query_p50_ms=statistics.median(plain),
        query_p95_ms=_p95(plain),
        split_query_p50_ms=statistics.median(split),
        split_query_p95_ms=_p95(split),
    )
    print(json.dumps(asdict(figures)))


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1]


def _organizations(prefix: str, count: int) -> list[str]:

    return [Organization.objects.get_or_create(slug=f"{prefix}-{n}", defaults={"name": f"{prefix} {n}"})[0].pk for n in range(count)]


def _measure_ingest(log: Callable[[str], None]) -> tuple[float, float]:

    tenants = _organizations("ingest", 20)
    UsageEvent.objects.unscoped_across_tenants().filter(organization_id__in=tenants).delete()
    UsageRollup.objects.unscoped_across_tenants().filter(organization_id__in=tenants).delete()
    with connection.cursor() as cursor:  # a previous run's rows are gone, not left as bloat
        cursor.execute(f"VACUUM ANALYZE {UsageEvent._meta.db_table}, {UsageRollup._meta.db_table}")
    rng = random.Random(7)
    start = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as directory:
        spool = Path(directory)
        log(f"metering: writing {INGEST_EVENTS:,} events to spool files, as two gateway processes would")
        files = [open(spool / f"gateway-{n}{SPOOL_SUFFIX}", "wb") for n in range(2)]  # noqa: SIM115
        for n in range(INGEST_EVENTS):
            model = rng.choice(MODELS)
            tokens_in, tokens_out = rng.randint(20, 2000), rng.randint(1, 600)
            record = UsageRecord(
                request_id=f"ing_{start.timestamp():.0f}_{n}", organization_id=rng.choice(tenants),
                at=start + timedelta(microseconds=40 * n),
                key_id=f"key_{rng.randrange(KEYS)}", endpoint="chat/completions", model=model, route=model, target=f"provider:p/{model}",
                deployment_id="", region=rng.choice(REGIONS), status=200 if rng.random() > 0.02 else rng.choice((429, 502)), error_code="",
                streamed=rng.random() < 0.5, attempts=1, input_tokens=tokens_in, output_tokens=tokens_out,
                latency_ms=rng.lognormvariate(5.5, 0.6), ttft_ms=None, cost=Decimal(tokens_in * 150 + tokens_out * 600) / Decimal(10**9),
                served_model=model, charge=Decimal(tokens_in * 150 + tokens_out * 600) * Decimal("1.25") / Decimal(10**9),
            )  # fmt: skip
            files[n % 2].write(encode(record) + b"\n")
        for handle in files:
            handle.close()  # finished files: the ingester deletes them once written

        workers = ingest.default_workers()

        def drain() -> float:
            began = time.perf_counter()
            source = ingest.SpoolSource(spool)
            written = 0
            while written < INGEST_EVENTS:
                written += ingest.ingest_available([source], workers)
            return time.perf_counter() - began

        copies = {path: path.read_bytes() for path in spool.glob("*" + SPOOL_SUFFIX)}
        log(f"metering: ingesting with {workers} writers")
        ingest_seconds = drain()
        stored = UsageEvent.objects.unscoped_across_tenants().filter(organization_id__in=tenants).count()
        rolled = sum(
            UsageRollup.objects.unscoped_across_tenants()
            .filter(organization_id__in=tenants, granularity="day", breakdown="none")
            .values_list("requests", flat=True)
        )
        if stored != INGEST_EVENTS or rolled != INGEST_EVENTS:
            raise RuntimeError(f"ingest lost or doubled events: {stored} stored, {rolled} rolled up, {INGEST_EVENTS} sent")
        log(f"metering: {INGEST_EVENTS / ingest_seconds:,.0f} events/s; replaying them")
        for path, content in copies.items():
            path.write_bytes(content)
        replay_seconds = drain()
        rolled_again = sum(
            UsageRollup.objects.unscoped_across_tenants()
            .filter(organization_id__in=tenants, granularity="day", breakdown="none")
            .values_list("requests", flat=True)
        )
        if rolled_again != INGEST_EVENTS:
            raise RuntimeError(f"a replay changed the rollups: {rolled_again} requests after, {INGEST_EVENTS} before")
    return ingest_seconds, replay_seconds


def _query_tenant(log: Callable[[str], None]) -> Any:
    """The query tenant and its 10 million events, generated once (kept between runs)."""

    org = Organization.objects.get(pk=_organizations("query", 1)[0])
    count = UsageEvent.objects.for_org(org).count()
    if count == QUERY_EVENTS:
        return org
    log(f"metering: generating {QUERY_EVENTS:,} events over {QUERY_DAYS} days for one tenant (once; a few minutes)")
    UsageEvent.objects.for_org(org).delete()

    UsageRollup.objects.for_org(org).delete()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(days=QUERY_DAYS)
    per_day = -(-QUERY_EVENTS // QUERY_DAYS)
    models = "ARRAY[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    regions = "ARRAY[" + ", ".join(f"'{r}'" for r in REGIONS) + "]"
    # Every combination of model, region and key occurs each hour (the most rollup rows);
    # latencies log-normal-ish. `i * 0` makes the draw per row, not once.
    generated = f"""
        SELECT 'qry_' || i AS request_id, %(org)s AS organization_id,
            %(start)s::timestamptz + (i * {QUERY_DAYS * 86400.0 / QUERY_EVENTS}) * interval '1 second' AS at,
            'key_' || floor(random() * {KEYS}) AS key_id, 'chat/completions' AS endpoint,
            model, model AS route, '' AS target, '' AS deployment_id, ({regions})[1 + floor(random() * {len(REGIONS)})::int] AS region,
            CASE WHEN mod(i, 53) = 0 THEN 429 WHEN mod(i, 211) = 0 THEN 502 ELSE 200 END AS status, '' AS error_code,
            mod(i, 2) = 0 AS streamed, 1 AS attempts, (20 + mod(i * 31, 1980))::int AS input_tokens,
            (1 + mod(i * 17, 600))::int AS output_tokens,
            exp(5.5 + 0.6 * (random() + random() + random() - 1.5) * 2) AS latency_ms, NULL::float8 AS ttft_ms,
            ((20 + mod(i * 31, 1980)) * 150 + (1 + mod(i * 17, 600)) * 600)::numeric / 1000000000 AS cost, model AS served_model,
            ((20 + mod(i * 31, 1980)) * 150 + (1 + mod(i * 17, 600)) * 600)::numeric * 1.25 / 1000000000 AS charge
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i,
            LATERAL (SELECT ({models})[1 + floor(random() * {len(MODELS)} + i * 0)::int] AS model) AS drawn
    """
    for day in range(QUERY_DAYS):
        with transaction.atomic():
            insert_and_roll_up(
                generated, {"org": org.pk, "start": start, "first": day * per_day, "last": min((day + 1) * per_day, QUERY_EVENTS) - 1}
            )
        if day % 5 == 4:
            log(f"metering: {min((day + 1) * per_day, QUERY_EVENTS):,} events")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return org


def _measure_queries(org: Any, log: Callable[[str], None]) -> tuple[int, list[float], list[float]]:
    """What the Usage page asks for a 30-day range in the viewer's time zone."""

    end = datetime.now(UTC)
    start = end - timedelta(days=QUERY_DAYS)
    zone = ZoneInfo("Europe/Paris")
    plain = selectors.UsageQuery(start=start, end=end, granularity=Granularity.DAY, timezone=zone)
    split = selectors.UsageQuery(start=start, end=end, granularity=Granularity.DAY, timezone=zone, group_by=("model",))
    rows = (
        UsageRollup.objects.for_org(org).filter(granularity=Granularity.HOUR, breakdown="none", bucket__gte=start, bucket__lt=end).count()
    )
    log(f"metering: querying {QUERY_DAYS} days ({rows:,} hourly rollup rows), {QUERY_RUNS} times each")
    timings: dict[str, list[float]] = {"plain": [], "split": []}
    for _ in range(QUERY_RUNS):
        for name, query in (("plain", plain), ("split", split)):
            began = time.perf_counter()
            points, total = selectors.usage_series(org, query)
            timings[name].append((time.perf_counter() - began) * 1000)
            if total.requests == 0:
                raise RuntimeError("the query tenant has no usage in range")
    return rows, timings["plain"], timings["split"]
