"""The usage API and its CSV exports: filters, grouping, granularity, time zones, and
one tenant's usage never visible to another."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from metering import ingest
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.helpers import key_api, session_api
from tests.metering.test_usage_pipeline import _record

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def _load(tenants: Tenants) -> None:
    records = []
    for hour in range(48):  # two days, one request per hour per route; 23:30 UTC is 00:30 in Paris
        at = DAY + timedelta(hours=hour, minutes=30)
        records.append(
            _record(
                tenants.org_a.pk, f"a_chat_{hour}", at=at, route="chat", region="us-east", latency_ms=10.0 + hour, cost=Decimal("0.000001")
            )
        )
        records.append(
            _record(
                tenants.org_a.pk,
                f"a_embed_{hour}",
                at=at,
                route="embed",
                region="eu-west",
                status=500 if hour % 12 == 0 else 200,
                latency_ms=100.0,
            )
        )
    records.append(_record(tenants.org_b.pk, "b_secret", at=DAY + timedelta(hours=3), route="globex-private", cost=Decimal("9")))
    ingest.write_batch(records)


def test_series_group_filter_and_total(tenants: Tenants) -> None:
    _load(tenants)
    api = session_api(tenants.admin_a, tenants.org_a)
    params = {"start": "2026-11-20T00:00:00Z", "end": "2026-11-22T00:00:00Z", "granularity": "day", "group_by": "route"}
    body = api.get("/api/v1/usage/", params).json()
    assert [(p["bucket"][:10], p["route"], p["requests"]) for p in body["series"]] == [
        ("2026-11-20", "chat", 24),
        ("2026-11-20", "embed", 24),
        ("2026-11-21", "chat", 24),
        ("2026-11-21", "embed", 24),
    ]
    embed = body["series"][1]
    assert embed["server_errors"] == 2 and embed["error_rate"] == round(2 / 24, 6)
    assert embed["latency_ms"]["p50"] == embed["latency_ms"]["p99"] and abs(embed["latency_ms"]["p50"] - 100) < 3
    assert body["totals"]["requests"] == 96 and body["totals"]["cost"] == str(Decimal("0.000001") * 48 + Decimal("0.000000123456") * 48)
    assert "globex-private" not in str(body)

    only_eu = api.get("/api/v1/usage/", {**params, "region": "eu-west", "group_by": ""}).json()
    assert only_eu["totals"]["requests"] == 48 and len(only_eu["series"]) == 2

    hourly = api.get("/api/v1/usage/", {**params, "granularity": "hour", "group_by": "region"}).json()
    assert len(hourly["series"]) == 96 and hourly["series"][0]["bucket"] == "2026-11-20T00:00:00+00:00"


def test_days_follow_the_time_zone(tenants: Tenants) -> None:
    _load(tenants)
    api = session_api(tenants.owner_a, tenants.org_a)
    body = api.get(
        "/api/v1/usage/", {"start": "2026-11-19T23:00:00Z", "end": "2026-11-22T00:00:00Z", "granularity": "day", "tz": "Europe/Paris"}
    ).json()
    # Paris is UTC+1 in November: 23:30 UTC on the 20th belongs to the 21st there.
    assert [(p["bucket"], p["requests"]) for p in body["series"]] == [
        ("2026-11-20T00:00:00+01:00", 46),
        ("2026-11-21T00:00:00+01:00", 48),
        ("2026-11-22T00:00:00+01:00", 2),
    ]


def test_csv_exports_stream_events_and_series(tenants: Tenants) -> None:
    _load(tenants)
    api = key_api(issue_key(tenants.org_a, ["read"]).plaintext)
    params = {"start": "2026-11-20T00:00:00Z", "end": "2026-11-22T00:00:00Z"}
    response = api.get("/api/v1/usage/events.csv", params)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv") and response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 96 and rows[0]["request_id"] in {"a_chat_0", "a_embed_0"} and "b_secret" not in str(rows)
    series = api.get("/api/v1/usage/series.csv", {**params, "granularity": "day", "group_by": "region"})
    lines = list(csv.reader(io.StringIO(b"".join(series.streaming_content).decode())))
    assert lines[0][:3] == ["bucket", "region", "requests"] and len(lines) == 5


def test_money_shows_only_to_roles_that_may_see_it_as_on_the_pages(tenants: Tenants) -> None:
    """Admins, owners and keys that may write see costs; members, viewers and read-only
    keys get the same answers and exports without them."""
    _load(tenants)
    params = {"start": "2026-11-20T00:00:00Z", "end": "2026-11-22T00:00:00Z", "granularity": "day"}
    callers = {
        "owner": session_api(tenants.owner_a, tenants.org_a),
        "admin": session_api(tenants.admin_a, tenants.org_a),
        "write key": key_api(issue_key(tenants.org_a, ["read", "write"]).plaintext),
        "member": session_api(tenants.member_a, tenants.org_a),
        "viewer": session_api(tenants.viewer_a, tenants.org_a),
        "read-only key": key_api(issue_key(tenants.org_a, ["read"]).plaintext),
    }
    for who, api in callers.items():
        sees = who in ("owner", "admin", "write key")
        body = api.get("/api/v1/usage/", params).json()
        assert ("cost" in body["totals"]) is sees and all(("cost" in p) is sees for p in body["series"]), who
        assert body["totals"]["requests"] == 96, who
        for export in ("/api/v1/usage/events.csv", "/api/v1/usage/series.csv"):
            header = b"".join(api.get(export, params).streaming_content).decode().splitlines()[0].split(",")
            assert ("cost" in header) is sees and "requests" in header or "request_id" in header, (who, export)


def test_other_tenants_see_only_their_own_usage(tenants: Tenants) -> None:
    _load(tenants)
    body = (
        session_api(tenants.viewer_b, tenants.org_b)
        .get("/api/v1/usage/", {"start": "2026-11-20T00:00:00Z", "end": "2026-11-22T00:00:00Z", "group_by": "route"})
        .json()
    )
    assert [(p["route"], p["requests"]) for p in body["series"]] == [("globex-private", 1)]
    exported = key_api(issue_key(tenants.org_b, ["read"]).plaintext).get(
        "/api/v1/usage/events.csv", {"start": "2026-11-20T00:00:00Z", "end": "2026-11-22T00:00:00Z"}
    )
    assert b"a_chat" not in b"".join(exported.streaming_content)


def test_bad_queries_say_what_to_fix(tenants: Tenants) -> None:
    api = session_api(tenants.owner_a, tenants.org_a)
    cases = [
        ({"tz": "Mars/Olympus"}, "time zone"),
        ({"group_by": "colour"}, "Cannot group by"),
        ({"start": "2026-11-22T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "before end"),
        ({"granularity": "minute", "start": "2026-10-01T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "at most 7 days"),
        ({"granularity": "week"}, ""),
        ({"start": "yesterday"}, ""),
    ]
    for params, message in cases:
        response = api.get("/api/v1/usage/", params)
        assert response.status_code == 400, (params, response.content)
        assert message in response.json()["error"]["message"] or message in str(response.json()["error"].get("fields"))
