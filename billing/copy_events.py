"""Writing usage on PostgreSQL: COPY, then one statement that inserts the new events and
adds them to the rollups.

The handed-over JSON goes into a temporary table through COPY untouched (Python never
parses it), and a single statement does the rest inside the database: it expands the
payloads, inserts the events with `ON CONFLICT (request_id) DO NOTHING RETURNING`, groups
exactly the returned (new) events by bucket and dimensions, and upserts them into the
rollups, merging latency histograms. A replay inserts nothing, so it adds nothing.

This is billing.rollups in SQL; the rollup tests run against both (SQLite takes the Python
path), so they cannot drift apart.
"""

from __future__ import annotations

import math
from functools import cache

from django.db import connection, transaction

from billing.histogram import GROWTH
from billing.models import Granularity, UsageEvent, UsageRollup
from billing.rollups import DIMENSIONS, KEPT
from console.models import Organization

INCOMING = "usage_incoming"
# CSV with quote and delimiter bytes that JSON never holds raw, so each line is one value.
_COPY = f"COPY {INCOMING} (doc) FROM STDIN (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"

# The event's columns and their SQL types, as billing.records.UsageRecord holds them.
EVENT_COLUMNS = {
    "request_id": "text",
    "organization_id": "text",
    "at": "timestamptz",
    "key_id": "text",
    "endpoint": "text",
    "model": "text",
    "route": "text",
    "target": "text",
    "deployment_id": "text",
    "region": "text",
    "status": "int",
    "error_code": "text",
    "streamed": "boolean",
    "attempts": "int",
    "input_tokens": "int",
    "output_tokens": "int",
    "latency_ms": "float8",
    "ttft_ms": "float8",
    "cost": "numeric",
}
_DIMENSIONS = ["organization_id", "granularity", "bucket", "breakdown", *DIMENSIONS]
_SUMS = ["requests", "client_errors", "server_errors", "input_tokens", "output_tokens", "cost"]


_FROM_PAYLOADS = f"""
    SELECT event.* FROM {INCOMING},
        json_array_elements(CASE json_typeof(doc) WHEN 'array' THEN doc ELSE json_build_array(doc) END) AS payload,
        json_to_record(payload) AS event ({", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS.items())})
"""


@cache
def statement(events_query: str = _FROM_PAYLOADS) -> str:
    """The insert-and-roll-up statement over `events_query`, a SELECT of the event columns
    (the benchmark generates its data through the same statement)."""
    events = connection.ops.quote_name(UsageEvent._meta.db_table)
    rollups = connection.ops.quote_name(UsageRollup._meta.db_table)
    organizations = connection.ops.quote_name(Organization._meta.db_table)
    columns = ", ".join(EVENT_COLUMNS)
    granularities = ", ".join(f"('{value}')" for value in Granularity.values)
    dimensions = ", ".join(_DIMENSIONS)
    sums = ", ".join(f"sum({name}) AS {name}" for name in _SUMS)
    # GROUPING() sets bit (4 - i) when the i-th dimension is rolled up (not kept).
    breakdown_names = " ".join(
        f"WHEN {sum(1 << (len(DIMENSIONS) - 1 - i) for i, name in enumerate(DIMENSIONS) if name not in kept)} THEN '{breakdown}'" for breakdown, kept in KEPT.items()
    )
    grouping_sets = ", ".join("(" + ", ".join(kept) + ")" for kept in KEPT.values())
    return f"""
WITH events AS ({events_query}),
inserted AS (
    INSERT INTO {events} ({columns}) SELECT {columns} FROM events
    WHERE organization_id IN (SELECT id FROM {organizations})  -- usage of a deleted organization is dropped
    ON CONFLICT (request_id) DO NOTHING
    RETURNING organization_id, at, route, deployment_id, region, key_id, model, status, input_tokens, output_tokens, latency_ms, cost
),
-- Minutes first, then hours and days from the minutes: fewer rows to group than three
-- passes over the events.
per_minute AS (
    SELECT date_trunc('minute', at, 'UTC') AS minute, organization_id, route, deployment_id, region, key_id, model,
        -- billing.histogram.bucket_of: the same double-precision logarithm (repr round-trips)
        CASE WHEN latency_ms < 1 THEN 0 ELSE floor(ln(latency_ms) / {math.log(GROWTH)!r}::float8)::int END AS latency_bucket,
        count(*) AS requests,
        count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
        count(*) FILTER (WHERE status >= 500) AS server_errors,
        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost
    FROM inserted
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
),
per_latency_bucket AS (
    SELECT g.granularity, date_trunc(g.granularity, m.minute, 'UTC') AS bucket, organization_id, route, deployment_id, region, key_id, model, latency_bucket,
        {sums}
    FROM per_minute AS m CROSS JOIN (VALUES {granularities}) AS g (granularity)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
),
per_breakdown AS (
    SELECT granularity, bucket, organization_id, CASE GROUPING({", ".join(DIMENSIONS)}) {breakdown_names} END AS breakdown,
        {", ".join(f"coalesce({name}, '') AS {name}" for name in DIMENSIONS)}, latency_bucket, {sums}
    FROM per_latency_bucket
    GROUP BY granularity, bucket, organization_id, latency_bucket, GROUPING SETS ({grouping_sets})
),
rolled AS (
    INSERT INTO {rollups} AS r ({dimensions}, {", ".join(_SUMS)}, latency_histogram)
    SELECT {dimensions}, {", ".join(f"sum({name})" for name in _SUMS)}, jsonb_object_agg(latency_bucket::text, requests)
    FROM per_breakdown
    GROUP BY {dimensions}
    ORDER BY {dimensions}  -- one lock order, so two ingesters cannot deadlock
    ON CONFLICT ({dimensions}) DO UPDATE SET
        {", ".join(f"{name} = r.{name} + EXCLUDED.{name}" for name in _SUMS)},
        latency_histogram = (
            SELECT jsonb_object_agg(key, total) FROM (
                SELECT key, sum(value::bigint) AS total
                FROM (SELECT * FROM jsonb_each_text(r.latency_histogram) UNION ALL SELECT * FROM jsonb_each_text(EXCLUDED.latency_histogram)) AS both_
                GROUP BY key
            ) AS merged
        )
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled)
"""


def write(payloads: list[bytes]) -> int:
    """Writes the payloads (each a JSON event or a JSON array of events) in one
    transaction; returns how many events were new. Raises IntegrityError or DataError when
    the database refuses any of them, having written none."""
    outer = connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {INCOMING} (doc json) ON COMMIT DELETE ROWS")
        if outer:  # inside a caller's transaction the rows of an earlier call are still there
            cursor.execute(f"TRUNCATE {INCOMING}")
        # The raw cursor's COPY: wrapped so its errors are Django's, as execute()'s are.
        with connection.wrap_database_errors, cursor.cursor.copy(_COPY) as copy:
            copy.write(b"\n".join(payloads))
        # The planner cannot know how many events the payloads hold; its guess is huge, and
        # compiling the statement (JIT) would then cost more than running it.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(statement())
        new, _ = cursor.fetchone()
    return int(new)
