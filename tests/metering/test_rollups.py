"""Rollups equal a direct aggregation of the raw events, for random event sets, however
the events arrive (in any batches, replayed, late), in every breakdown. On PostgreSQL the
rollups are written in SQL (metering.copy_events), elsewhere in Python (metering.rollups):
CI runs this against both."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering import histogram, ingest
from metering.models import Granularity, UsageEvent, UsageRollup
from metering.records import UsageRecord
from metering.rollups import DIMENSIONS, KEPT, bucket_start
from tests.conftest import Tenants

START = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)

events = st.lists(
    st.fixed_dictionaries(
        {
            "org": st.sampled_from(["a", "b"]),
            "seconds": st.integers(0, 3 * 86_400),  # across hours and days
            "route": st.sampled_from(["chat", "embed", ""]),
            "served": st.sampled_from(["gpt-x", "llama-y", ""]),  # "": nothing answered, or an earlier version's event
            "region": st.sampled_from(["us-east", "eu-west"]),
            "key": st.sampled_from(["key_1", "key_2", ""]),
            "status": st.sampled_from([200, 200, 200, 400, 429, 499, 500, 503]),
            "input_tokens": st.integers(0, 5_000),
            "output_tokens": st.integers(0, 5_000),
            "cost": st.decimals(min_value=0, max_value=Decimal("5"), places=12),
            "latency_ms": st.floats(0.01, 600_000, allow_nan=False),
        }
    ),
    min_size=1,
    max_size=60,
)


def _records(tenants: Tenants, drawn: list[dict[str, object]]) -> list[UsageRecord]:
    org_ids = {"a": tenants.org_a.pk, "b": tenants.org_b.pk}
    return [
        UsageRecord(
            request_id=f"req_{index}",
            organization_id=org_ids[e["org"]],
            at=START + timedelta(seconds=e["seconds"]),  # type: ignore[arg-type, operator]
            key_id=e["key"],
            endpoint="chat/completions",
            model=f"{e['route'] or 'dep'}-model",
            route=e["route"],
            target="t",  # type: ignore[arg-type]
            deployment_id="" if e["route"] else "dep_1",
            region=e["region"],
            status=e["status"],
            error_code="",
            streamed=False,  # type: ignore[arg-type]
            attempts=1,
            input_tokens=e["input_tokens"],
            output_tokens=e["output_tokens"],
            latency_ms=e["latency_ms"],
            ttft_ms=None,
            cost=e["cost"],  # type: ignore[arg-type]
            served_model=e["served"],  # type: ignore[arg-type]
        )
        for index, e in enumerate(drawn)
    ]


def _direct(granularity: str) -> dict[tuple[object, ...], dict[str, object]]:
    """The same figures, straight from the stored events."""
    totals: dict[tuple[object, ...], dict[str, object]] = defaultdict(
        lambda: {
            "requests": 0,
            "client_errors": 0,
            "server_errors": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost": Decimal(0),
            "latency": {},
        }
    )
    for event, (breakdown, kept) in itertools.product(UsageEvent.objects.unscoped_across_tenants(), KEPT.items()):
        key = (
            event.organization_id,
            bucket_start(event.at, granularity),
            breakdown,
            *(getattr(event, name) if name in kept else "" for name in DIMENSIONS),
        )
        row = totals[key]
        row["requests"] += 1  # type: ignore[operator]
        row["client_errors"] += 400 <= event.status < 500  # type: ignore[operator]
        row["server_errors"] += event.status >= 500  # type: ignore[operator]
        row["input_tokens"] += event.input_tokens  # type: ignore[operator]
        row["output_tokens"] += event.output_tokens  # type: ignore[operator]
        row["cost"] += event.cost  # type: ignore[operator]
        histogram.add(row["latency"], event.latency_ms)  # type: ignore[arg-type]
    return totals


def _rolled(granularity: str) -> dict[tuple[object, ...], dict[str, object]]:
    return {
        (r.organization_id, r.bucket, r.breakdown, *(getattr(r, name) for name in DIMENSIONS)): {
            "requests": r.requests,
            "client_errors": r.client_errors,
            "server_errors": r.server_errors,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cost": r.cost,
            "latency": r.latency_histogram,
        }
        for r in UsageRollup.objects.unscoped_across_tenants().filter(granularity=granularity)
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=events, cuts=st.lists(st.integers(1, 20), min_size=1, max_size=6), replay=st.integers(0, 59))
def test_rollups_equal_the_events_however_they_arrive(
    tenants: Tenants, drawn: list[dict[str, object]], cuts: list[int], replay: int
) -> None:
    UsageEvent.objects.unscoped_across_tenants().delete()
    UsageRollup.objects.unscoped_across_tenants().delete()
    records = _records(tenants, drawn)
    # Arrive in batches of random sizes, in reverse time order (late events), with one
    # stretch delivered twice.
    arriving = sorted(records, key=lambda r: r.at, reverse=True)
    arriving += arriving[replay % len(arriving) :][: cuts[0]]
    position, index = 0, 0
    while position < len(arriving):
        size = cuts[index % len(cuts)]
        ingest.write_batch(arriving[position : position + size])
        position, index = position + size, index + 1
    assert UsageEvent.objects.unscoped_across_tenants().count() == len(records)
    for granularity in Granularity.values:
        assert _rolled(granularity) == _direct(granularity), granularity


def test_percentiles_from_merged_histograms_are_within_the_stated_error() -> None:
    values = [0.5 + i * 0.37 for i in range(5000)]
    parts = [dict[str, int]() for _ in range(7)]
    for i, value in enumerate(values):
        histogram.add(parts[i % 7], value)
    merged = histogram.merge(parts)
    ordered = sorted(values)
    for fraction in (0.5, 0.95, 0.99):
        exact = ordered[int(fraction * len(ordered)) - 1]
        estimate = histogram.percentile(merged, fraction)
        assert estimate is not None and abs(estimate - exact) / exact < 0.03, (fraction, estimate, exact)
    assert histogram.percentile({}, 0.5) is None
