"""The console's usage dashboards: the Usage page, the data its charts draw, and the live
push over the WebSocket; one tenant's usage never reaches another."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from config.websocket_routes import websocket_urlpatterns
from deployments.models import Cluster, Replica, ReplicaEvent
from metering import dashboards, ingest
from metering.dashboards import DashboardParams
from metering.formatting import compact, milliseconds, money, percent
from tenancy.models import Membership
from tests.conftest import Tenants
from tests.factories import create_deployment, issue_key
from tests.metering.test_usage_pipeline import _record

SECRET_ROUTE = "globex-private-route"
SECRET_MODEL = "globex-secret-model"


def _load(tenants: Tenants, *, now: datetime | None = None, prefix: str = "a") -> None:
    """Org A: two models in two regions over the last hours, some errors. Org B: one
    request on a route and model whose names must never reach org A."""
    now = now or timezone.now()
    records = []
    for i in range(30):
        at = now - timedelta(minutes=5 + 7 * i)
        records.append(
            _record(
                tenants.org_a.pk,
                f"{prefix}_chat_{i}",
                at=at,
                model="chat-default",
                route="chat-default",
                region="us-east",
                latency_ms=100.0,
                cost=Decimal("0.002"),
            )
        )
        records.append(
            _record(
                tenants.org_a.pk,
                f"{prefix}_embed_{i}",
                at=at,
                model="embed",
                route="",
                region="eu-west",
                status=500 if i % 10 == 0 else 200,
                latency_ms=20.0,
                input_tokens=5,
                output_tokens=0,
            )
        )
    records.append(
        _record(
            tenants.org_b.pk,
            f"{prefix}_b_secret",
            at=now - timedelta(minutes=3),
            model=SECRET_MODEL,
            route=SECRET_ROUTE,
            region="ap-south",
            cost=Decimal("9"),
        )
    )
    ingest.write_batch(records)


def _page(user, url: str):  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.get(url)


def _embedded(response) -> dict:  # type: ignore[no-untyped-def]
    html = response.content.decode()
    start = html.index('<script id="usage-data" type="application/json">') + len('<script id="usage-data" type="application/json">')
    return json.loads(html[start : html.index("</script>", start)])


# ---------------------------------------------------------------------------------------
# The page


def test_the_usage_page_shows_the_organizations_usage(tenants: Tenants) -> None:
    _load(tenants)
    response = _page(tenants.viewer_a, f"/o/{tenants.org_a.slug}/usage/?range=24h&split=model")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-value="60" data-testid="usage-requests">60<' in html
    assert "chat-default" in html and "embed" in html
    assert SECRET_MODEL not in html and SECRET_ROUTE not in html and "ap-south" not in html
    data = _embedded(response)
    assert data["totals"]["requests"] == 60 and data["totals"]["errors"] == 3
    assert [g["name"] for g in data["groups"]] == ["chat-default", "embed"]
    assert {c["id"] for c in data["charts"]} == {"requests", "tokens", "latency", "errors"}  # a viewer sees no money
    assert "cost" not in data["totals"] and "usage-cost" not in html
    assert 'aria-current="page"' in html and f'href="/o/{tenants.org_a.slug}/usage/"' in html  # in the side nav


def test_admins_see_cost(tenants: Tenants) -> None:
    _load(tenants)
    response = _page(tenants.admin_a, f"/o/{tenants.org_a.slug}/usage/?range=24h")
    data = _embedded(response)
    assert Decimal(data["totals"]["cost"]) == Decimal("0.002") * 30 + Decimal("0.000000123456") * 30
    assert "cost" in {c["id"] for c in data["charts"]}
    assert 'data-testid="usage-cost">$0.06<' in response.content.decode()


def test_an_organization_without_usage_is_told_how_to_make_a_first_request(tenants: Tenants) -> None:
    html = _page(tenants.owner_a, f"/o/{tenants.org_a.slug}/usage/").content.decode()
    assert "No requests yet" in html and 'data-testid="usage-empty" hidden' not in html
    assert "http://testserver/v1/chat/completions" in html and 'base_url="http://testserver/v1"' in html
    assert f'href="/o/{tenants.org_a.slug}/keys/"' in html and f'href="/o/{tenants.org_a.slug}/routing/playground/"' in html
    viewer = _page(tenants.viewer_a, f"/o/{tenants.org_a.slug}/usage/").content.decode()
    assert "Ask an admin or owner" in viewer


def test_usage_elsewhere_does_not_make_the_page_look_used(tenants: Tenants) -> None:
    _load(tenants)
    html = _page(tenants.owner_b, f"/o/{tenants.org_b.slug}/usage/?split=model").content.decode()
    data = _embedded(_page(tenants.owner_b, f"/o/{tenants.org_b.slug}/usage/?split=model"))
    assert data["totals"]["requests"] == 1 and [g["name"] for g in data["groups"]] == [SECRET_MODEL]
    assert "chat-default" not in html and "eu-west" not in html


def test_non_members_get_404_and_anonymous_visitors_sign_in(tenants: Tenants) -> None:
    _load(tenants)
    assert _page(tenants.owner_b, f"/o/{tenants.org_a.slug}/usage/").status_code == 404
    assert _page(tenants.owner_b, "/o/no-such-org/usage/").status_code == 404
    response = Client().get(f"/o/{tenants.org_a.slug}/usage/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_seeded_demo_usage_fills_the_page(tenants: Tenants) -> None:
    call_command("seed_usage", "--org", tenants.org_a.slug, "--days", "2", "--per-hour", "6", stdout=io.StringIO())
    data = _embedded(_page(tenants.owner_a, f"/o/{tenants.org_a.slug}/usage/?range=7d&split=key"))
    assert data["totals"]["requests"] > 100 and data["totals"]["errors"] > 0
    assert {"backend-prod", "batch-jobs"} <= {g["name"] for g in data["groups"]}
    assert _embedded(_page(tenants.owner_b, f"/o/{tenants.org_b.slug}/usage/"))["has_usage"] is False


def test_bad_parameters_fall_back_to_the_defaults(tenants: Tenants) -> None:
    response = _page(tenants.viewer_a, f"/o/{tenants.org_a.slug}/usage/?range=99y&split=colour&tz=Mars/Olympus")
    assert response.status_code == 200
    data = _embedded(response)
    assert (data["range"], data["split"], data["tz"]) == ("24h", "none", "UTC")


def test_key_labels_come_from_the_organizations_own_keys(tenants: Tenants) -> None:
    mine = issue_key(tenants.org_a, ["inference"], name="backend-prod").api_key
    theirs = issue_key(tenants.org_b, ["inference"], name="globex-payroll-key").api_key
    now = timezone.now()
    # An event naming another tenant's key id (it cannot happen, but if it did) shows the bare id.
    ingest.write_batch(
        [
            _record(tenants.org_a.pk, "k1", at=now - timedelta(minutes=2), key_id=mine.id),
            _record(tenants.org_a.pk, "k2", at=now - timedelta(minutes=2), key_id=theirs.id),
        ]
    )
    data = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="1h", split="key"), show_cost=True)
    assert sorted(g["name"] for g in data["groups"]) == sorted(["backend-prod", theirs.id])
    assert "globex-payroll-key" not in json.dumps(data)


# ---------------------------------------------------------------------------------------
# The data behind the charts


def test_every_bucket_of_the_range_is_present_and_empty_ones_have_no_latency(tenants: Tenants) -> None:
    now = datetime(2026, 11, 28, 10, 30, 20, tzinfo=UTC)
    ingest.write_batch([_record(tenants.org_a.pk, f"r{i}", at=now - timedelta(minutes=10), latency_ms=50.0) for i in range(4)])
    data = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="1h"), show_cost=False, now=now)
    assert len(data["buckets"]) == 60 and data["step_s"] == 60 and data["granularity"] == "minute"
    assert data["buckets"][-1] == int(datetime(2026, 11, 28, 10, 30, tzinfo=UTC).timestamp() * 1000)  # the minute in progress is last
    charts = {c["id"]: c for c in data["charts"]}
    requests = charts["requests"]["series"][0]["values"]
    assert sum(requests) == 4 and requests[-11] == 4
    p50 = charts["latency"]["series"][0]["values"]
    assert p50[-12] is None and abs(p50[-11] - 50) < 2
    assert charts["errors"]["series"][0]["values"][-11] == 0.0


def test_small_groups_are_merged_into_other(tenants: Tenants) -> None:
    now = timezone.now()
    records = []
    for m in range(8):  # model m0 has 8 requests, m7 has 1
        records += [
            _record(tenants.org_a.pk, f"m{m}_{i}", at=now - timedelta(minutes=1), model=f"m{m}", latency_ms=10.0 * (m + 1))
            for i in range(8 - m)
        ]
    ingest.write_batch(records)
    data = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="1h", split="model"), show_cost=True)
    assert [g["name"] for g in data["groups"]] == ["m0", "m1", "m2", "m3", "m4", "Other (3)"]
    other = data["groups"][-1]
    assert other["other"] and other["requests"] == 3 + 2 + 1
    # Other's latency is a merge of its groups' histograms: p95 of 6 values (60, 60, 60, 70, 70, 80 ms).
    assert abs(other["p95"] - 80) < 3
    stacked = next(c for c in data["charts"] if c["id"] == "requests")["series"]
    assert sum(sum(s["values"]) for s in stacked) == 36 and stacked[-1]["other"]


def test_thirty_days_are_local_days(tenants: Tenants) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    # 23:30 UTC on the 26th is 00:30 on the 27th in Paris.
    ingest.write_batch([_record(tenants.org_a.pk, "late", at=datetime(2026, 11, 26, 23, 30, tzinfo=UTC))])
    data = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="30d", tz="Europe/Paris"), show_cost=False, now=now)
    paris = ZoneInfo("Europe/Paris")
    days = [datetime.fromtimestamp(b / 1000, paris) for b in data["buckets"]]
    assert len(days) == 30 and all((d.hour, d.minute) == (0, 0) for d in days) and days[-1].date().isoformat() == "2026-11-28"
    requests = data["charts"][0]["series"][0]["values"]
    assert requests[days.index(datetime(2026, 11, 27, tzinfo=paris))] == 1


def test_the_deployment_charts_show_its_traffic_and_replicas(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="svc")
    ten = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    now = ten + timedelta(minutes=5, seconds=30)

    def replica(cluster: str) -> Replica:
        return Replica.objects.create(
            organization=tenants.org_a,
            deployment=deployment,
            revision=deployment.current_revision,
            cluster=Cluster.objects.get(name=cluster),
        )

    def event(rep: Replica, state: str, minutes: float) -> None:
        ReplicaEvent.objects.create(
            organization=tenants.org_a, deployment=deployment, replica=rep, to_state=state, at=ten + timedelta(minutes=minutes)
        )

    first, second = replica("local-us-east"), replica("local-eu-west")
    event(first, "pending", -5)
    event(first, "ready", -4)
    event(second, "pending", 1.5)
    event(second, "loading", 1.7)
    event(second, "ready", 2.2)
    event(first, "draining", 3.1)
    event(first, "stopped", 3.4)
    ingest.write_batch(
        [
            _record(tenants.org_a.pk, f"d{i}", at=ten + timedelta(minutes=2, seconds=i), deployment_id=deployment.id, latency_ms=40.0)
            for i in range(30)
        ]
        + [_record(tenants.org_a.pk, "elsewhere", at=ten + timedelta(minutes=2))]
    )
    data = dashboards.deployment_dashboard(tenants.org_a, deployment.id, DashboardParams(range="1h"), now=now)
    charts = {c["id"]: c for c in data["charts"]}
    assert list(charts) == ["rps", "latency", "replicas"] and "cost" not in data["totals"]
    assert charts["rps"]["series"][0]["values"][-4:] == [0.5, 0.0, 0.0, 0.0]  # 30 requests in the 10:02 minute
    assert [s["name"] for s in charts["latency"]["series"]] == ["p50", "p95"]
    billed, ready = charts["replicas"]["series"]
    # Per minute from 10:00: the most replicas holding a GPU, and READY, at once.
    assert list(zip(billed["values"][-6:], ready["values"][-6:], strict=True)) == [(1, 1), (2, 1), (2, 2), (2, 2), (1, 1), (1, 1)]


def test_numbers_are_formatted_for_people() -> None:
    assert [compact(v) for v in (0, 999, 1234, 12_345, 1_234_567)] == ["0", "999", "1,234", "12.3K", "1.2M"]
    assert [money(v) for v in ("0", "3.414", "0.000123", "1234.5")] == ["$0.00", "$3.41", "$0.00012", "$1,234.50"]
    assert [milliseconds(v) for v in (0.8, 12.2, 1500)] == ["0.8 ms", "12 ms", "1.50 s"]
    assert [percent(v) for v in (0, 0.005, 0.0004, 0.25)] == ["0%", "0.5%", "<0.1%", "25%"]


# ---------------------------------------------------------------------------------------
# The live push


class Socket(ApplicationCommunicator):
    """The WebSocket routes driven in-process as ASGI, the signed-in user set on the scope
    as the auth middleware would. (Like channels.testing.WebsocketCommunicator, whose
    package needs daphne.)"""

    def __init__(self, user, path: str) -> None:  # type: ignore[no-untyped-def]
        path, _, query = path.partition("?")
        scope = {"type": "websocket", "path": path, "query_string": query.encode(), "headers": [], "subprotocols": [], "user": user}
        super().__init__(URLRouter(websocket_urlpatterns), scope)

    async def connect(self, timeout: float = 10) -> tuple[bool, int | None]:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        return True, None

    async def receive_json(self, timeout: float = 5) -> dict:
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", response
        return json.loads(response["text"])

    async def disconnect(self) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(1)


@pytest.mark.django_db(transaction=True)
def test_the_socket_sends_the_dashboard_then_pushes_new_usage(tenants: Tenants) -> None:
    _load(tenants)

    async def scenario() -> None:
        socket = Socket(tenants.viewer_a, f"/ws/o/{tenants.org_a.slug}/usage/?range=1h&split=model&tz=Europe/Paris")
        connected, _ = await socket.connect(timeout=10)
        assert connected
        first = await socket.receive_json()
        assert (
            first["totals"]["requests"] == 16 and first["tz"] == "Europe/Paris" and first["split"] == "model"
        )  # 8 per model in the last hour
        assert "cost" not in first["totals"]
        # Three new requests of org A (and one of org B, which must not show) arrive.
        now = timezone.now()
        await database_sync_to_async(ingest.write_batch)(
            [_record(tenants.org_a.pk, f"live_{i}", at=now, model="chat-default") for i in range(3)]
            + [_record(tenants.org_b.pk, "live_b", at=now, model=SECRET_MODEL, route=SECRET_ROUTE)]
        )
        update = await socket.receive_json(timeout=5)
        assert update["totals"]["requests"] == 19
        for message in (first, update):
            text = json.dumps(message)
            assert SECRET_MODEL not in text and SECRET_ROUTE not in text and "ap-south" not in text
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_the_socket_refuses_other_tenants_and_anonymous_visitors(tenants: Tenants) -> None:
    from django.contrib.auth.models import AnonymousUser

    _load(tenants)
    deployment = create_deployment(tenants.org_a, name="private-svc")

    async def refused(user, path: str) -> None:  # type: ignore[no-untyped-def]
        socket = Socket(user, path)
        connected, code = await socket.connect(timeout=10)
        assert (connected, code) == (False, 4404), path
        await socket.disconnect()

    async def scenario() -> None:
        await refused(tenants.owner_b, f"/ws/o/{tenants.org_a.slug}/usage/")
        await refused(AnonymousUser(), f"/ws/o/{tenants.org_a.slug}/usage/")
        await refused(tenants.owner_b, "/ws/o/no-such-org/usage/")
        # A member of B asking for A's deployment through B's own organization.
        await refused(tenants.owner_b, f"/ws/o/{tenants.org_b.slug}/usage/?deployment={deployment.id}")

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_admins_get_cost_and_a_removed_member_is_cut_off(tenants: Tenants) -> None:
    _load(tenants)

    async def scenario() -> None:
        socket = Socket(tenants.admin_a, f"/ws/o/{tenants.org_a.slug}/usage/?range=24h")
        connected, _ = await socket.connect(timeout=10)
        assert connected
        first = await socket.receive_json()
        assert Decimal(first["totals"]["cost"]) > 0 and "cost" in {c["id"] for c in first["charts"]}
        await database_sync_to_async(lambda: Membership.objects.for_org(tenants.org_a).filter(user=tenants.admin_a).delete())()
        output = await socket.receive_output(timeout=5)
        while output["type"] == "websocket.send":  # a push that was already under way
            output = await socket.receive_output(timeout=5)
        assert output == {"type": "websocket.close", "code": 4404}

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_a_deployment_socket_carries_its_requests_latency_and_replicas(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="svc")
    now = timezone.now()
    ingest.write_batch(
        [
            _record(tenants.org_a.pk, f"d{i}", at=now - timedelta(minutes=3), deployment_id=deployment.id, latency_ms=40.0)
            for i in range(120)
        ]
        + [_record(tenants.org_a.pk, "other", at=now - timedelta(minutes=3))]
    )

    async def scenario() -> None:
        socket = Socket(tenants.viewer_a, f"/ws/o/{tenants.org_a.slug}/usage/?range=1h&deployment={deployment.id}")
        connected, _ = await socket.connect(timeout=10)
        assert connected
        data = await socket.receive_json()
        charts = {c["id"]: c for c in data["charts"]}
        assert set(charts) == {"rps", "latency", "replicas"}
        assert max(charts["rps"]["series"][0]["values"]) == 2.0  # 120 requests in one minute
        assert [s["name"] for s in charts["latency"]["series"]] == ["p50", "p95"]
        assert data["totals"]["requests"] == 120
        await socket.disconnect()

    async_to_sync(scenario)()
