"""Writing usage on PostgreSQL: COPY, one INSERT for the events, the rollups from what it
returned.

The handed-over lines go into a temporary table through COPY untouched (they are COPY's
text format already; Python never parses them). One statement inserts the events with
`ON CONFLICT (request_id) DO NOTHING RETURNING` the few columns the rollups need, already
reduced to integers (minute, latency bucket, cost units). Exactly the returned (new)
events are aggregated (metering.rollups.aggregate, vectorised) and upserted into the
rollups through a second COPY, merging latency histograms, in the same transaction. A
replay inserts nothing, so it adds nothing.

SQLite takes metering.ingest's Python path, which aggregates with the same function; the
rollup tests run against both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from django.db import connection, transaction

from broadcast.groups import usage_group
from broadcast.publish import publish_after_commit
from metering import histogram
from metering.histogram import GROWTH
from metering.models import UsageEvent, UsageRollup
from metering.rollups import COST_PLACES, DIMENSIONS, EventColumns, Key, aggregate, lock_organizations
from metering.spool import FIELD_COUNT, LEGACY_FIELD_COUNTS
from tenancy.models import Organization

# Events arrive as lines of COPY text (metering.spool), which go into a typed table as they
# are. An earlier version's JSON events and arrays of them are staged apart and parsed.
EVENT_LINES = "usage_incoming_line"
SINGLE_EVENTS = "usage_incoming_event"
EVENT_ARRAYS = "usage_incoming_array"
INCOMING_ROLLUPS = "usage_incoming_rollup"

# The event's columns and their SQL types, as metering.records.UsageRecord holds them.
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
    "served_model": "text",
    "charge": "numeric",
}
_COLUMN_TYPES = ", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS.items())
_RECORD = f"AS event ({_COLUMN_TYPES})"
# An earlier version's JSON events have no served_model: empty, as its lines get (and no
# charge: null, as json_to_record gives a missing key).
_JSON_COLUMNS = ", ".join("coalesce(event.served_model, '')" if name == "served_model" else f"event.{name}" for name in EVENT_COLUMNS)
STAGED_EVENTS = f"""
    SELECT * FROM {EVENT_LINES}
    UNION ALL
    SELECT {_JSON_COLUMNS} FROM {SINGLE_EVENTS}, json_to_record(doc) {_RECORD}
    UNION ALL
    SELECT {_JSON_COLUMNS} FROM {EVENT_ARRAYS}, json_array_elements(doc) AS payload, json_to_record(payload) {_RECORD}
"""
_ROLLUP_KEY = ["organization_id", "granularity", "bucket", "breakdown", *DIMENSIONS]
_ROLLUP_SUMS = ["requests", "client_errors", "server_errors", "input_tokens", "output_tokens", "cost", "charge"]


def write(payloads: list[bytes]) -> int:
    """Writes the payloads (each an event line, a stream entry of lines, or an earlier
    version's JSON event or array of them) in one transaction; returns how many events
    were new. Raises IntegrityError or DataError when
    the database refuses any of them, having written none."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {EVENT_LINES} ({_COLUMN_TYPES}) ON COMMIT DELETE ROWS")
        for table in (SINGLE_EVENTS, EVENT_ARRAYS):
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (doc json) ON COMMIT DELETE ROWS")
        # Inside a caller's transaction the rows of an earlier call are still there.
        cursor.execute(f"TRUNCATE {EVENT_LINES}, {SINGLE_EVENTS}, {EVENT_ARRAYS}")
        staged: dict[str, list[bytes]] = {EVENT_LINES: [], SINGLE_EVENTS: [], EVENT_ARRAYS: []}
        for payload in payloads:
            staged[SINGLE_EVENTS if payload[:1] == b"{" else EVENT_ARRAYS if payload[:1] == b"[" else EVENT_LINES].append(payload)
        staged[EVENT_LINES] = [_with_every_field(payload) for payload in staged[EVENT_LINES]]
        if staged[EVENT_LINES]:
            _copy(cursor, f"COPY {EVENT_LINES} FROM STDIN", staged[EVENT_LINES])
        for table in (SINGLE_EVENTS, EVENT_ARRAYS):
            if staged[table]:
                # CSV with quote and delimiter bytes that JSON never holds raw: a line is one value.
                _copy(cursor, f"COPY {table} (doc) FROM STDIN (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')", staged[table])
        return insert_and_roll_up(STAGED_EVENTS)


def insert_and_roll_up(events_query: str, params: Mapping[str, Any] | None = None) -> int:
    """Inserts the events `events_query` selects (the event columns), skipping request ids
    already stored and events of organizations that no longer exist, and adds the new
    ones to the rollups. Call inside a transaction; returns how many were new. (The
    benchmark generates its data through here too.)"""
    events = connection.ops.quote_name(UsageEvent._meta.db_table)
    organizations = connection.ops.quote_name(Organization._meta.db_table)
    columns = ", ".join(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        # The planner cannot know how many events the payloads hold; its guess is huge, and
        # compiling the statement (JIT) would then cost more than running it.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(
            f"""
            WITH new AS (
                INSERT INTO {events} ({columns}) SELECT {columns} FROM ({events_query}) AS events
                WHERE organization_id IN (SELECT id FROM {organizations})  -- usage of a deleted organization is dropped
                ON CONFLICT (request_id) DO NOTHING
                RETURNING organization_id, {", ".join(DIMENSIONS)}, at, status, input_tokens, output_tokens, latency_ms, cost,
                    coalesce(charge, cost) AS shown_charge  -- an earlier version's events: their cost (metering.rollups)
            )
            -- What the rollups need, as one array per column (far cheaper to fetch than rows).
            SELECT coalesce(array_agg(json_build_array(organization_id, {", ".join(DIMENSIONS)})::text), '{{}}'),
                coalesce(array_agg(floor(extract(epoch FROM at) / 60)::bigint), '{{}}'),
                coalesce(array_agg(status), '{{}}'), coalesce(array_agg(input_tokens), '{{}}'), coalesce(array_agg(output_tokens), '{{}}'),
                -- metering.histogram.bucket_of: the same double-precision logarithm (repr round-trips)
                coalesce(array_agg(
                    CASE WHEN latency_ms < 1 THEN 0 ELSE floor(ln(latency_ms) / {math.log(GROWTH)!r}::float8)::int END
                ), '{{}}'),
                coalesce(array_agg((cost * 1e{COST_PLACES})::bigint), '{{}}'),
                coalesce(array_agg((shown_charge * 1e{COST_PLACES})::bigint), '{{}}')
            FROM new
            """,
            params,
        )
        new = EventColumns(*cursor.fetchone())
        if len(new):
            _add_to_rollups(cursor, new)
    return len(new)


def _add_to_rollups(cursor: Any, new: EventColumns) -> None:
    """Upserts the new events' changes. Histograms are merged here, not in SQL (where a
    merge costs more than the rest of the row): under the organizations' rollup lock,
    the stored histograms are read, merged with the changes and written back."""
    changes = aggregate(new)
    organizations = {key[0] for key in changes}
    lock_organizations(organizations)
    publish_after_commit(groups=[usage_group(org) for org in organizations])  # their dashboards re-read
    stored = _stored_histograms(cursor, list(changes))
    rollups = connection.ops.quote_name(UsageRollup._meta.db_table)
    key, sums = ", ".join(_ROLLUP_KEY), ", ".join(_ROLLUP_SUMS)
    cursor.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {INCOMING_ROLLUPS} (organization_id text, granularity text, bucket timestamptz, breakdown text,
            {", ".join(f"{name} text" for name in DIMENSIONS)}, requests bigint, client_errors bigint, server_errors bigint,
            input_tokens bigint, output_tokens bigint, cost numeric, charge numeric, latency_histogram jsonb) ON COMMIT DELETE ROWS"""
    )
    cursor.execute(f"TRUNCATE {INCOMING_ROLLUPS}")
    with connection.wrap_database_errors, cursor.cursor.copy(f"COPY {INCOMING_ROLLUPS} FROM STDIN") as copy:
        for row_key, delta in changes.items():
            latency = delta.latency
            if (before := stored.get(row_key)) is not None:
                latency = orjson.loads(before)
                histogram.merge_into(latency, delta.latency)
            copy.write_row(
                (
                    *row_key,
                    delta.requests,
                    delta.client_errors,
                    delta.server_errors,
                    delta.input_tokens,
                    delta.output_tokens,
                    delta.cost,
                    delta.charge,
                    orjson.dumps(latency).decode(),
                )
            )
    cursor.execute(
        f"""
        INSERT INTO {rollups} AS r ({key}, {sums}, latency_histogram)
        SELECT {key}, {sums}, latency_histogram FROM {INCOMING_ROLLUPS}
        ORDER BY {key}
        ON CONFLICT ({key}) DO UPDATE SET
            {", ".join(f"{name} = r.{name} + EXCLUDED.{name}" for name in _ROLLUP_SUMS)},
            latency_histogram = EXCLUDED.latency_histogram  -- already merged
        """
    )


def _stored_histograms(cursor: Any, keys: list[Key]) -> dict[Key, str]:
    """The stored histograms (JSON) of those of these rollup rows that exist."""
    rollups = connection.ops.quote_name(UsageRollup._meta.db_table)
    types = ["text", "text", "timestamptz", "text", *(["text"] * len(DIMENSIONS))]
    cursor.execute(
        f"""
        SELECT {", ".join(f"r.{name}" for name in _ROLLUP_KEY)}, r.latency_histogram::text
        FROM unnest({", ".join(f"%s::{kind}[]" for kind in types)}) AS wanted ({", ".join(_ROLLUP_KEY)})
        JOIN {rollups} AS r USING ({", ".join(_ROLLUP_KEY)})
        """,
        [list(column) for column in zip(*keys, strict=True)],
    )
    return {tuple(row[:-1]): row[-1] for row in cursor.fetchall()}  # type: ignore[misc]


# What an earlier version's lines lack, as COPY text: an empty served_model, a null charge.
_MISSING = {19: b"\t\t\\N", 20: b"\t\\N"}


def _with_every_field(payload: bytes) -> bytes:
    """The payload's lines with the fields an earlier version's lines lack, so COPY takes
    them all. Lines hold no raw tab or newline but the separators (metering.spool escapes
    them), and one payload comes from one writer, so its lines have one width."""
    lines = payload.count(b"\n") + 1
    tabs = payload.count(b"\t")
    if tabs == (FIELD_COUNT - 1) * lines:
        return payload
    for width in LEGACY_FIELD_COUNTS:
        if tabs == (width - 1) * lines:
            return payload.replace(b"\n", _MISSING[width] + b"\n") + _MISSING[width]
    return payload  # COPY refuses it, saying why


def _copy(cursor: Any, command: str, lines: list[bytes]) -> None:
    # The raw cursor's COPY: wrapped so its errors are Django's, as execute()'s are.
    with connection.wrap_database_errors, cursor.cursor.copy(command) as copy:
        copy.write(b"\n".join(lines))
