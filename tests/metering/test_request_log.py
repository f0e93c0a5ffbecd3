"""The Requests page and `GET /api/v1/requests/`: an organization's requests one by one,
filtered on every recorded field, searched by request id, paged by keyset; another
tenant's requests are never listed or found, and money is shown to those who see it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from metering import ingest
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.helpers import session_api
from tests.metering.test_usage_pipeline import _record

pytestmark = pytest.mark.django_db


def _browser(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _load(tenants: Tenants) -> dict[str, str]:
    """Org A: 60 requests of one key, every fourth streamed, every tenth a 502, one slow
    429 of another key; org B: one request whose names must never reach org A."""
    now = timezone.now()
    key_a = issue_key(tenants.org_a, ["inference"], name="backend-prod").api_key.id
    other_a = issue_key(tenants.org_a, ["inference"], name="notebook").api_key.id
    records = [
        _record(
            tenants.org_a.pk,
            f"req_a_{i:02d}",
            at=now - timedelta(minutes=2 + i),
            key_id=key_a,
            model="chat-default",
            route="chat-default",
            target="provider:alpha/gpt-x",
            served_model="gpt-x",
            status=502 if i % 10 == 0 else 200,
            error_code="upstream_error" if i % 10 == 0 else "",
            streamed=i % 4 == 0,
            latency_ms=100.0 + i,
            ttft_ms=40.0 if i % 4 == 0 else None,
            cost=Decimal("0.000100"),
            charge=Decimal("0.000125"),
        )
        for i in range(60)
    ]
    records.append(
        _record(
            tenants.org_a.pk,
            "req_a_slow",
            at=now - timedelta(minutes=1),
            key_id=other_a,
            model="embed",
            route="",
            target="",
            region="eu-west",
            status=429,
            error_code="rate_limited",
            latency_ms=5_000.0,
        )
    )
    records.append(
        _record(tenants.org_b.pk, "req_b_secret", at=now - timedelta(minutes=1), model="globex-secret-model", route="globex-route")
    )
    ingest.write_batch(records)
    return {"key": key_a, "other": other_a}


def test_the_page_lists_filters_and_pages_an_organizations_requests(tenants: Tenants) -> None:
    keys = _load(tenants)
    admin = _browser(tenants.owner_a)
    url = f"/o/{tenants.org_a.slug}/requests/"
    page = admin.get(url).content.decode()
    assert page.count("/requests/req_a_") == 50 and "Older" in page  # the newest 50 of 61
    assert page.index("req_a_slow") < page.index("req_a_00") < page.index("req_a_01")  # newest first
    assert "backend-prod" in page and "notebook" in page and "$0.00013" in page  # key names, charge (rounded)
    assert "globex" not in page and "req_b_secret" not in page
    # Older: the rest, none twice.
    older = admin.get(url + "?" + page.split('href="?', 2)[-1].split('"')[0].replace("&amp;", "&")).content.decode()
    assert older.count("/requests/req_a_") == 11 and "req_a_48" not in older and "req_a_49" in older

    def listed(query: str) -> set[str]:
        body = admin.get(url + query).content.decode()
        return {part.split("/")[0] for part in body.split("/requests/req_")[1:]}

    assert listed("?status=5xx") == {f"a_{i:02d}" for i in range(0, 60, 10)}
    assert listed("?status=429") == listed(f"?key={keys['other']}") == listed("?region=eu-west") == {"a_slow"}
    assert listed("?status=errors&min_latency_ms=4000") == {"a_slow"}
    assert listed("?error_code=upstream_error&streamed=yes") == {f"a_{i:02d}" for i in range(0, 60, 20)}
    assert listed("?model=chat-default&min_latency_ms=155") == {f"a_{i:02d}" for i in range(55, 60)}
    assert listed("?target=provider:alpha/gpt-x&since=1h&status=2xx&min_latency_ms=150") == {f"a_{i:02d}" for i in range(50, 58) if i % 10}
    assert listed("?model=globex-secret-model") == set()  # another tenant's name finds nothing


def test_search_by_id_opens_the_request_and_never_another_tenants(tenants: Tenants) -> None:
    _load(tenants)
    admin = _browser(tenants.owner_a)
    url = f"/o/{tenants.org_a.slug}/requests/"
    found = admin.get(url + "?q=req_a_10")
    assert found.status_code == 302 and found["Location"].endswith("/requests/req_a_10/")
    detail = admin.get(found["Location"]).content.decode()
    assert 'data-testid="request-error"' in detail and "upstream_error" in detail and "502" in detail
    assert 'data-testid="request-charge">$0.000125<' in detail and "gpt-x" in detail and "streamed" not in detail.split("Endpoint")[1][:80]
    missing = admin.get(url + "?q=req_b_secret").content.decode()
    assert "No request req_b_secret in this organization." in missing and "globex" not in missing
    assert admin.get(url + "req_b_secret/").status_code == 404
    assert _browser(tenants.owner_b).get(url + "req_a_10/").status_code == 404  # not a member of org A


def test_a_viewer_sees_requests_but_no_money(tenants: Tenants) -> None:
    _load(tenants)
    viewer = _browser(tenants.viewer_a)
    url = f"/o/{tenants.org_a.slug}/requests/"
    page = viewer.get(url).content.decode()
    assert "req_a_00" in page and "Charge" not in page and "$" not in page
    detail = viewer.get(url + "req_a_00/").content.decode()
    assert "request-charge" not in detail and "0.000125" not in detail
    body = session_api(tenants.viewer_a, tenants.org_a).get("/api/v1/requests/").json()
    assert body["results"] and all("charge" not in row for row in body["results"])


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?status=abc", "status is a code from 100 to 599"),
        ("?since=9y", "Select a valid choice"),
        ("?min_latency_ms=-1", "greater than or equal to 0"),
        ("?after=not-a-cursor", "This page link is not valid"),
        ("?after=MjAyMC0wMS0wMXxyZXFfeA==", "This page link is not valid"),  # "2020-01-01|req_x": no time zone
    ],
)
def test_bad_filters_get_a_400_that_says_what_to_fix(tenants: Tenants, query: str, says: str) -> None:
    _load(tenants)
    response = _browser(tenants.owner_a).get(f"/o/{tenants.org_a.slug}/requests/{query}")
    assert response.status_code == 400 and says in response.content.decode()


def test_the_api_lists_pages_filters_and_finds_one_request(tenants: Tenants) -> None:
    _load(tenants)
    api = session_api(tenants.owner_a, tenants.org_a)
    first = api.get("/api/v1/requests/?limit=40").json()
    assert len(first["results"]) == 40 and first["next"]
    rest = api.get(f"/api/v1/requests/?limit=40&after={first['next']}").json()
    assert len(rest["results"]) == 21 and rest["next"] is None
    ids = [row["request_id"] for row in first["results"] + rest["results"]]
    assert len(set(ids)) == 61 and "req_b_secret" not in ids
    errors = api.get("/api/v1/requests/?status=5xx&streamed=true").json()["results"]
    assert {row["request_id"] for row in errors} == {"req_a_00", "req_a_20", "req_a_40"}
    one = api.get("/api/v1/requests/req_a_00/").json()
    assert (one["status"], one["error_code"], one["charge"], one["served_model"], one["ttft_ms"]) == (
        502,
        "upstream_error",
        "0.000125",
        "gpt-x",
        40.0,
    )
    slow = api.get("/api/v1/requests/req_a_slow/").json()
    assert slow["charge"] == "0.000000123456"  # an event without a charge of its own: its recorded cost
    assert api.get("/api/v1/requests/req_b_secret/").status_code == 404
    bad = api.get("/api/v1/requests/?status=6xx")
    assert bad.status_code == 400 and "status" in bad.content.decode()
    assert session_api(tenants.owner_b, tenants.org_b).get("/api/v1/requests/req_a_00/").status_code == 404
