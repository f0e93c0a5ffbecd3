"""The Admin console and admin API (staff only): tenants, quotas, standing, plans, credits,
the price book, clusters and platform usage. Every change is audited; everyone who is not
staff gets 404 on every admin page and admin API, whatever the method, role or key."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from billing import platform_stats, rating, staff_ops
from billing.models import BillingAccount, CreditGrant, ModelPrice, Plan
from deployments import services as deployment_services
from deployments.models import Cluster, ClusterGpu, Deployment, Quota, Replica
from metering.models import Breakdown, Granularity, UsageRollup
from routing.gateway.snapshot import load_snapshot
from tenancy.models import AuditEntry, Organization, OrgStatus, Role, StaffAuditEntry, User
from tenancy.staff_audit import StaffContext
from tests.api_calls import STAFF_CALLS
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import MembershipFactory, UserFactory, create_deployment, ensure_clusters, issue_key
from tests.helpers import key_api, session_api
from tests.urlmatrix import Route, all_routes

STAFF_ROUTES = [route for route in all_routes() if route.template.startswith(("/staff/", "/api/v1/admin/"))]
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def staff(db: None) -> User:
    return UserFactory(is_staff=True, email="ops@switchboard.test")


@pytest.fixture
def console(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def admin_api(staff: User):  # type: ignore[no-untyped-def]
    return session_api(staff)


@pytest.fixture
def fleet(tenants: Tenants) -> Fleet:
    ensure_clusters()
    return Fleet()


def _values(tenants: Tenants, version_id: int = 1) -> dict[str, str]:
    return {"org_id": tenants.org_a.pk, "cluster_name": "local-us-east", "version_id": str(version_id)}


def _staff_context(user: User) -> StaffContext:
    return StaffContext(user=user)


def _next_hour() -> datetime:
    return staff_ops.next_whole_hour() + timedelta(hours=1)


# ---------------------------------------------------------------------------------------
# Staff only


def test_the_admin_section_has_pages_and_api_endpoints() -> None:
    templates = {route.template for route in STAFF_ROUTES}
    assert len([t for t in templates if t.startswith("/staff/")]) >= 15
    assert len([t for t in templates if t.startswith("/api/v1/admin/")]) >= 8
    assert "/staff/tenants/<str:org_id>/quota/" in templates and "/api/v1/admin/tenants/<str:org_id>/quota/" in templates


def _non_staff_callers(tenants: Tenants) -> dict[str, Client]:
    callers: dict[str, Client] = {"anonymous": Client(), "anonymous with CSRF checks": Client(enforce_csrf_checks=True)}
    for role in ("owner_a", "admin_a", "member_a", "viewer_a", "owner_b"):
        client = Client()
        client.force_login(getattr(tenants, role))
        callers[role] = client
    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.force_login(tenants.owner_a)
    callers["owner with CSRF checks"] = csrf_checked
    # Keys of any scope, of either tenant, and a key created by a staff user who is an
    # owner of an organization: keys never carry platform powers.
    for scopes in (["inference"], ["read"], ["read", "write"], ["inference", "read", "write"]):
        callers[f"key {'+'.join(scopes)}"] = Client(
            HTTP_AUTHORIZATION=f"Bearer {issue_key(tenants.org_a, scopes, name='-'.join(scopes)).plaintext}"
        )
    callers["key of org B"] = Client(HTTP_AUTHORIZATION=f"Bearer {issue_key(tenants.org_b, ['read', 'write']).plaintext}")
    callers["bad key"] = Client(HTTP_AUTHORIZATION="Bearer sbk_notarealkey00_" + "x" * 40)
    inactive_staff = UserFactory(is_staff=True, is_active=False)
    client = Client()
    client.force_login(inactive_staff)
    callers["inactive staff"] = client
    return callers


def test_non_staff_get_404_on_every_admin_page_and_api_whatever_the_method(tenants: Tenants) -> None:
    staff_owner = UserFactory(is_staff=True)
    MembershipFactory(organization=tenants.org_b, user=staff_owner, role=Role.OWNER)
    callers = _non_staff_callers(tenants)
    callers["key created by a staff owner"] = Client(
        HTTP_AUTHORIZATION=f"Bearer {issue_key(tenants.org_b, ['read', 'write'], name='staff-made').plaintext}"
    )
    ensure_clusters()
    version = ModelPrice.objects.create(model="m", input_price_per_mtok=1, output_price_per_mtok=2, effective_from=_next_hour())
    quota_before = Quota.objects.filter(organization=tenants.org_a).count()
    for route in STAFF_ROUTES:
        url = route.build(**_values(tenants, version.pk))
        for name, client in callers.items():
            for method in METHODS:
                kwargs = (
                    {"data": '{"requests_per_minute": 2, "status": "suspended", "reason": "x"}', "content_type": "application/json"}
                    if method != "get"
                    else {}
                )
                response = getattr(client, method)(url, **kwargs)
                assert response.status_code == 404, f"{name} {method.upper()} {url}: {response.status_code}"
                if route.is_api:
                    assert response.json()["error"]["code"] == "not_found"
    assert StaffAuditEntry.objects.count() == 0
    assert Quota.objects.filter(organization=tenants.org_a).count() == quota_before
    assert ModelPrice.objects.filter(pk=version.pk).exists()
    assert Cluster.objects.get(pk="local-us-east").status == Cluster.Status.ACTIVE
    tenants.org_a.refresh_from_db()
    assert tenants.org_a.status == OrgStatus.ACTIVE


def test_the_admin_api_answers_exactly_like_an_unknown_endpoint(tenants: Tenants) -> None:
    key = issue_key(tenants.org_a, ["read", "write"]).plaintext
    for client in (key_api(key), session_api(tenants.owner_a, tenants.org_a)):
        known, unknown = client.get("/api/v1/admin/tenants/"), client.get("/api/v1/admin/tenantz/")
        assert known.status_code == unknown.status_code == 404
        assert known.json()["error"]["message"].replace("tenants", "X") == unknown.json()["error"]["message"].replace("tenantz", "X")


def test_the_admin_api_is_not_in_the_public_schema(db: None) -> None:
    schema = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200 and b"/api/v1/admin/" not in schema.content


def test_staff_mutations_table_covers_the_admin_api() -> None:
    endpoints = {(method, route.template) for route in STAFF_ROUTES if route.is_api for method in route.api_methods if method != "get"}
    assert endpoints == {(call.method, call.route) for call in STAFF_CALLS}


@pytest.mark.parametrize("call", STAFF_CALLS, ids=lambda call: call.name)
def test_each_admin_api_mutation_works_for_staff_only(tenants: Tenants, admin_api, call) -> None:  # type: ignore[no-untyped-def]
    ensure_clusters()
    if call.name == "mark cluster up":
        Cluster.objects.filter(pk="local-us-east").update(status=Cluster.Status.DOWN)
    url = call.url(_values(tenants))
    for role in Role:
        response = getattr(session_api(tenants.user(str(role)), tenants.org_a), call.method)(url, call.body, format="json")
        assert response.status_code == 404, (role, response.content)
    assert StaffAuditEntry.objects.count() == 0
    response = getattr(admin_api, call.method)(url, call.body, format="json")
    assert response.status_code in (200, 201), response.content
    assert StaffAuditEntry.objects.count() == 1


def test_staff_see_the_admin_nav_and_others_do_not(tenants: Tenants, console: Client) -> None:
    page = console.get("/staff/").content.decode()
    for label in ("Tenants", "Clusters", "Platform usage", "Price book", "Staff audit log"):
        assert f">{label}</a>" in page
    owner = Client()
    owner.force_login(tenants.owner_a)
    assert "Platform usage" not in owner.get(f"/o/{tenants.org_a.slug}/").content.decode()


@pytest.mark.parametrize("route", STAFF_ROUTES, ids=lambda route: route.template)
def test_no_admin_route_answers_500_to_staff(tenants: Tenants, console: Client, route: Route) -> None:
    ensure_clusters()
    version = ModelPrice.objects.create(model="m", input_price_per_mtok=1, output_price_per_mtok=2, effective_from=_next_hour())
    url = route.build(**_values(tenants, version.pk))
    odd = [
        None,
        "{",
        "[1, 2]",
        '{"requests_per_minute": -1, "gpus": {"ZZZ": "x"}, "status": 7, "inventory": "x", "monthly_spend_cap": "1e999"}',
    ]
    for method in METHODS:
        for body in odd if method != "get" else [None]:
            kwargs = {"data": body, "content_type": "application/json"} if body is not None else {}
            response = getattr(console, method)(url, **kwargs)
            assert response.status_code < 500, f"{method.upper()} {url} {body!r}: {response.status_code}"
    # Form posts with junk are answered with what to fix, never a 500.
    for route_url, data in (
        (f"/staff/tenants/{tenants.org_a.pk}/quota/", {"max_replicas": "lots", "requests_per_minute": "-3"}),
        (f"/staff/tenants/{tenants.org_a.pk}/credits/", {"credit-amount": "1e999", "credit-reason": ""}),
        ("/staff/clusters/", {"name": "Bad Name!", "agent_url": "ftp://"}),
        ("/staff/prices/model/", {"model-model": "", "model-effective_from": "yesterday"}),
    ):
        assert console.post(route_url, data).status_code == 400


# ---------------------------------------------------------------------------------------
# Tenants and their quotas


def _rollup(
    org: Organization, at: datetime, *, requests: int, input_tokens: int, output_tokens: int, cost: str = "0", model: str = ""
) -> None:
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    hour = at.replace(minute=0, second=0, microsecond=0)
    UsageRollup.objects.create(
        organization=org,
        granularity=Granularity.DAY,
        bucket=day,
        breakdown=Breakdown.NONE,
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=Decimal(cost),
    )
    UsageRollup.objects.create(
        organization=org,
        granularity=Granularity.HOUR,
        bucket=hour,
        breakdown=Breakdown.ALL,
        model=model,
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=Decimal(cost),
    )


def test_tenants_list_shows_plan_status_spend_and_usage(tenants: Tenants, console: Client) -> None:
    now = timezone.now()
    ModelPrice.objects.create(
        model="chat-default", input_price_per_mtok=Decimal("2"), output_price_per_mtok=Decimal("6"), effective_from=rating.month_start(now)
    )
    _rollup(tenants.org_a, now, requests=1234, input_tokens=1_000_000, output_tokens=500_000, model="chat-default")
    BillingAccount.objects.create(organization=tenants.org_b, plan=Plan.ENTERPRISE, committed_monthly_minimum=Decimal("1000"))
    Organization.objects.filter(pk=tenants.org_b.pk).update(status=OrgStatus.PAST_DUE)
    rows = {row.organization.pk: row for row in platform_stats.tenant_rows(list(Organization.objects.all()), now)}
    assert rows[tenants.org_a.pk].spend == Decimal("5.00") == rating.month_to_date(tenants.org_a, now)  # 1M x $2 + 0.5M x $6
    assert (rows[tenants.org_a.pk].requests, rows[tenants.org_a.pk].tokens) == (1234, 1_500_000)
    assert rows[tenants.org_b.pk].plan == Plan.ENTERPRISE and rows[tenants.org_b.pk].spend == 0
    page = console.get("/staff/").content.decode()
    assert "Acme" in page and "Globex" in page and "$5.00" in page and "1,234" in page and "Enterprise" in page and "Past due" in page
    assert f'href="/staff/tenants/{tenants.org_a.pk}/"' in page
    assert "Globex" not in console.get("/staff/?q=acme").content.decode()
    api = session_api(User.objects.get(email="ops@switchboard.test")).get("/api/v1/admin/tenants/").json()
    acme = next(row for row in api["results"] if row["id"] == tenants.org_a.pk)
    assert acme["spend_month_to_date"] == "5.00" and acme["requests_month_to_date"] == 1234 and acme["plan"] == "payg"
    detail = console.get(f"/staff/tenants/{tenants.org_a.pk}/")
    assert detail.status_code == 200 and "$5.00" in detail.content.decode()
    assert console.get("/staff/tenants/org_doesnotexist0000000000/").status_code == 404


def test_staff_set_quotas_audited_in_both_logs_and_deploys_are_refused_past_them(tenants: Tenants, console: Client, staff: User) -> None:
    ensure_clusters()
    create_deployment(tenants.org_a, name="first", max_replicas=2)
    page = console.get(f"/staff/tenants/{tenants.org_a.pk}/quota/")
    assert page.status_code == 200 and "The platform defaults" in page.content.decode()
    form = {
        "max_replicas": "2", "requests_per_minute": "2", "tokens_per_minute": "5000", "concurrent_requests": "3",
        "monthly_spend_cap": "250.00",
        "gpu_cpu": "2", "gpu_t4": "1", "gpu_l4": "0", "gpu_a10g": "0", "gpu_a100_80gb": "0", "gpu_h100": "0", "gpu_h200": "0",
    }  # fmt: skip
    response = console.post(f"/staff/tenants/{tenants.org_a.pk}/quota/", form)
    assert response.status_code == 302, response.content.decode()
    quota = Quota.objects.for_org(tenants.org_a).get()
    assert (quota.max_replicas, quota.requests_per_minute, quota.tokens_per_minute, quota.concurrent_requests) == (2, 2, 5000, 3)
    assert quota.gpus == {"CPU": 2, "T4": 1} and quota.monthly_spend_cap == Decimal("250.00")

    staff_entry = StaffAuditEntry.objects.get(action="quota.changed")
    tenant_entry = AuditEntry.objects.for_org(tenants.org_a).get(action="quota.changed")
    for entry in (staff_entry, tenant_entry):
        assert entry.actor_user == staff and entry.actor_label == "ops@switchboard.test (platform staff)"
        assert (
            entry.before["max_replicas"] == 4 and entry.before["requests_per_minute"] == 600 and entry.before["monthly_spend_cap"] is None
        )
        assert entry.after["max_replicas"] == 2 and entry.after["requests_per_minute"] == 2 and entry.after["monthly_spend_cap"] == "250.00"
    assert staff_entry.organization == tenants.org_a and set(tenant_entry.after["changed"]) >= {
        "max_replicas",
        "requests_per_minute",
        "gpus",
    }
    owner = Client()
    owner.force_login(tenants.owner_a)
    log = owner.get(f"/o/{tenants.org_a.slug}/audit/").content.decode()
    assert "quota.changed" in log and "ops@switchboard.test (platform staff)" in log
    assert "quota.changed" in console.get("/staff/audit/").content.decode()

    # Saving the same values again changes nothing and records nothing.
    assert console.post(f"/staff/tenants/{tenants.org_a.pk}/quota/", form).status_code == 302
    assert StaffAuditEntry.objects.filter(action="quota.changed").count() == 1

    # Each limit at its point: deploy and scale name the limit; the gateway reads the rest.
    with pytest.raises(deployment_services.QuotaExceeded, match="replica quota is 2"):
        create_deployment(tenants.org_a, name="second", max_replicas=1)
    member = session_api(tenants.member_a, tenants.org_a)
    refused = member.post(
        "/api/v1/deployments/",
        {"name": "third", "model": "tiny-chat", "gpu_type": "T4", "allowed_regions": ["us-east"], "max_replicas": 2},
        format="json",
    )
    assert refused.status_code == 403 and "quota" in refused.json()["error"]["message"]
    deployment = Deployment.objects.for_org(tenants.org_a).get(name="first")
    scaled = member.patch(f"/api/v1/deployments/{deployment.pk}/", {"max_replicas": 3}, format="json")
    assert scaled.status_code == 403 and "replica quota is 2" in scaled.json()["error"]["message"]
    limits = load_snapshot(tenants.org_a.pk).limits
    assert (limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_requests) == (2, 5000, 3)
    from billing.invoices import spend_limit

    assert spend_limit(tenants.org_a).amount == Decimal("250.00")  # type: ignore[union-attr]


def test_lowering_a_gpu_quota_refuses_scaling_on_that_gpu_type(tenants: Tenants, admin_api) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="t4", gpu_type="T4", max_replicas=1)
    response = admin_api.patch(f"/api/v1/admin/tenants/{tenants.org_a.pk}/quota/", {"gpus": {"T4": 1}}, format="json")
    assert response.status_code == 200 and response.json()["gpus"] == {"CPU": 8, "L4": 2, "T4": 1, "A10G": 2} | {"T4": 1}
    member = session_api(tenants.member_a, tenants.org_a)
    refused = member.patch(f"/api/v1/deployments/{deployment.pk}/", {"max_replicas": 2}, format="json")
    assert refused.status_code == 403 and "T4 quota is 1" in refused.json()["error"]["message"]


def test_the_quota_api_validates_and_names_the_field(tenants: Tenants, admin_api) -> None:  # type: ignore[no-untyped-def]
    url = f"/api/v1/admin/tenants/{tenants.org_a.pk}/quota/"
    body = admin_api.get(url).json()
    assert body["max_replicas"] == 4 and body["requests_per_minute"] == 600 and body["monthly_spend_cap"] is None
    for change, field in (
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"max_replicas": -1}, "max_replicas"),
        ({"gpus": {"TPU": 2}}, "gpus"),
        ({"gpus": {"T4": -1}}, "gpus"),
        ({"monthly_spend_cap": "12.345"}, "monthly_spend_cap"),
        ({"monthly_spend_cap": "-1"}, "monthly_spend_cap"),
        ({"tokens_per_minute": "many"}, "tokens_per_minute"),
        ({"replicas": 3}, "replicas"),
    ):
        response = admin_api.patch(url, change, format="json")
        assert response.status_code == 400, (change, response.content)
        assert field in response.json()["error"]["fields"], response.json()
    assert StaffAuditEntry.objects.count() == 0 and not Quota.objects.filter(organization=tenants.org_a).exists()
    response = admin_api.patch(url, {"tokens_per_minute": 10_000, "monthly_spend_cap": None, "key_requests_per_minute": 5}, format="json")
    assert (
        response.status_code == 200 and response.json()["tokens_per_minute"] == 10_000 and response.json()["key_requests_per_minute"] == 5
    )
    assert AuditEntry.objects.for_org(tenants.org_a).filter(action="quota.changed").count() == 1
    assert admin_api.get("/api/v1/admin/tenants/org_doesnotexist0000000000/quota/").status_code == 404


def test_the_quota_form_says_what_to_fix(tenants: Tenants, console: Client) -> None:
    response = console.post(
        f"/staff/tenants/{tenants.org_a.pk}/quota/",
        {"max_replicas": "two", "requests_per_minute": "0", "tokens_per_minute": "", "monthly_spend_cap": "1.234"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert (
        "Enter a whole number." in page
        and "greater than or equal to 1" in page
        and "This field is required." in page
        and "2 decimal places" in page
    )
    assert StaffAuditEntry.objects.count() == 0


def test_staff_suspend_and_reactivate_a_tenant_with_a_reason(tenants: Tenants, console: Client, admin_api) -> None:  # type: ignore[no-untyped-def]
    url = f"/staff/tenants/{tenants.org_a.pk}/status/"
    missing = console.post(url, {"status-status": "suspended", "status-reason": ""})
    assert missing.status_code == 400 and "This field is required." in missing.content.decode()
    assert console.post(url, {"status-status": "suspended", "status-reason": "Abuse report #42: spam generation"}).status_code == 302
    tenants.org_a.refresh_from_db()
    assert tenants.org_a.status == OrgStatus.SUSPENDED and tenants.org_a.status_reason == "Abuse report #42: spam generation"
    snapshot = load_snapshot(tenants.org_a.pk)
    assert snapshot.suspended and "Abuse report #42" in snapshot.status_reason
    entry = AuditEntry.objects.for_org(tenants.org_a).get(action="organization.suspended")
    assert entry.before == {"status": "active", "status_reason": ""} and entry.after["status"] == "suspended"
    again = console.post(url, {"status-status": "suspended", "status-reason": "again"})
    assert again.status_code == 400 and "already suspended" in again.content.decode()
    response = admin_api.post(
        f"/api/v1/admin/tenants/{tenants.org_a.pk}/status/", {"status": "active", "reason": "Resolved with the customer"}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "active" and response.json()["status_reason"] == ""
    assert (
        admin_api.post(
            f"/api/v1/admin/tenants/{tenants.org_a.pk}/status/", {"status": "past_due", "reason": "x"}, format="json"
        ).status_code
        == 400
    )
    assert StaffAuditEntry.objects.filter(organization=tenants.org_a).count() == 2


def test_staff_set_the_plan_and_grant_credits(tenants: Tenants, console: Client, staff: User) -> None:
    base = f"/staff/tenants/{tenants.org_a.pk}"
    wrong = console.post(f"{base}/plan/", {"plan-plan": "payg", "plan-committed_monthly_minimum": "500"})
    assert wrong.status_code == 400 and "belongs to the enterprise plan" in wrong.content.decode()
    assert console.post(f"{base}/plan/", {"plan-plan": "enterprise", "plan-committed_monthly_minimum": "500.00"}).status_code == 302
    account = BillingAccount.objects.for_org(tenants.org_a).get()
    assert account.plan == Plan.ENTERPRISE and account.committed_monthly_minimum == Decimal("500.00")
    entry = AuditEntry.objects.for_org(tenants.org_a).get(action="billing.plan_changed")
    assert entry.before["plan"] == "payg" and entry.after == {
        "plan": "enterprise",
        "committed_monthly_minimum": "500.00",
        "currency": "usd",
    }

    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    expired = console.post(f"{base}/credits/", {"credit-amount": "25", "credit-reason": "Outage", "credit-expires_at": past})
    assert expired.status_code == 400 and "must be in the future" in expired.content.decode()
    soon = (timezone.now() + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M")
    assert (
        console.post(
            f"{base}/credits/", {"credit-amount": "25.50", "credit-reason": "Outage on 3 May", "credit-expires_at": soon}
        ).status_code
        == 302
    )
    grant = CreditGrant.objects.for_org(tenants.org_a).get()
    assert grant.amount == Decimal("25.50") and grant.reason == "Outage on 3 May" and grant.expires_at is not None
    assert AuditEntry.objects.for_org(tenants.org_a).get(action="billing.credit_granted").after["amount"] == "25.50"
    owner = Client()
    owner.force_login(tenants.owner_a)
    billing_page = owner.get(f"/o/{tenants.org_a.slug}/billing/").content.decode()
    assert "Outage on 3 May" in billing_page and "Enterprise" in billing_page
    assert StaffAuditEntry.objects.filter(actor_user=staff).count() == 2


# ---------------------------------------------------------------------------------------
# The price book


def test_price_versions_are_added_never_edited_and_only_upcoming_ones_cancelled(tenants: Tenants, console: Client, staff: User) -> None:
    now = timezone.now()
    in_force = ModelPrice.objects.create(
        model="chat-default",
        input_price_per_mtok=Decimal("0.5"),
        output_price_per_mtok=Decimal("1.5"),
        effective_from=rating.month_start(now),
    )
    start = _next_hour()
    form = {
        "model-model": "chat-default",
        "model-input_price_per_mtok": "0.000000125",
        "model-output_price_per_mtok": "10",
        "model-effective_from": start.strftime("%Y-%m-%dT%H:%M"),
    }
    assert console.post("/staff/prices/model/", form).status_code == 302
    upcoming = ModelPrice.objects.get(effective_from=start)
    assert upcoming.organization is None and upcoming.input_price_per_mtok == Decimal("0.000000125")  # sub-cent precision kept
    page = console.get("/staff/prices/").content.decode()
    assert "$0.5 in / $1.5 out" in page and "$0.000000125 in / $10 out" in page  # current and upcoming, never 1E+1

    past = rating.month_start(now).strftime("%Y-%m-%dT%H:%M")
    refused = console.post("/staff/prices/model/", {**form, "model-effective_from": past})
    assert refused.status_code == 400 and "cannot take effect in the past" in refused.content.decode()
    half = console.post("/staff/prices/model/", {**form, "model-effective_from": start.replace(minute=30).strftime("%Y-%m-%dT%H:%M")})
    assert half.status_code == 400 and "whole hour" in half.content.decode()
    twice = console.post("/staff/prices/model/", form)
    assert twice.status_code == 400 and "already has a version" in twice.content.decode()

    gpu = console.post(
        "/staff/prices/gpu/",
        {"gpu-gpu_type": "T4", "gpu-price_per_hour": "0.526", "gpu-effective_from": start.strftime("%Y-%m-%dT%H:%M")},
    )
    markup = console.post("/staff/prices/markup/", {"markup-percent": "12.5", "markup-effective_from": start.strftime("%Y-%m-%dT%H:%M")})
    assert gpu.status_code == markup.status_code == 302

    assert console.post(f"/staff/prices/model/{in_force.pk}/cancel/").status_code == 302
    assert ModelPrice.objects.filter(pk=in_force.pk).exists()  # in force: kept forever
    assert console.post(f"/staff/prices/model/{upcoming.pk}/cancel/").status_code == 302
    assert not ModelPrice.objects.filter(pk=upcoming.pk).exists()
    actions = list(StaffAuditEntry.objects.order_by("created_at", "id").values_list("action", flat=True))
    assert actions == [
        "price.model_version_added",
        "price.gpu_version_added",
        "price.markup_version_added",
        "price.model_version_cancelled",
    ]
    assert all(entry.actor_user == staff and entry.organization is None for entry in StaffAuditEntry.objects.all())
    assert not AuditEntry.objects.for_org(tenants.org_a).exists()  # platform prices belong to no tenant


def test_an_enterprise_override_is_the_tenants_own_and_audited_in_its_log(tenants: Tenants, console: Client) -> None:
    start = _next_hour()
    url = f"/staff/tenants/{tenants.org_a.pk}/prices/model/"
    form = {
        "model-model": "chat-default",
        "model-input_price_per_mtok": "0.2",
        "model-output_price_per_mtok": "0.6",
        "model-effective_from": start.strftime("%Y-%m-%dT%H:%M"),
    }
    assert console.post(url, form).status_code == 302
    override = ModelPrice.objects.get(organization=tenants.org_a)
    assert override.input_price_per_mtok == Decimal("0.2")
    book = rating.PriceBook.load(tenants.org_a)
    assert book.model_prices["chat-default"].at(start) == override
    assert "chat-default" not in rating.PriceBook.load(tenants.org_b).model_prices
    entry = AuditEntry.objects.for_org(tenants.org_a).get(action="price.model_version_added")
    assert entry.after["organization"] == tenants.org_a.pk
    assert "$0.2 in / $0.6 out" in console.get(f"/staff/tenants/{tenants.org_a.pk}/").content.decode()
    assert "Acme" in console.get("/staff/prices/").content.decode()  # listed among the overrides
    lines = staff_ops.price_lines(overrides=True, organization=tenants.org_a)
    assert [(line.kind, line.key, line.current, line.upcoming) for line in lines] == [("model", "chat-default", None, [override])]


# ---------------------------------------------------------------------------------------
# Clusters


def test_staff_add_a_cluster_and_the_form_says_what_to_fix(tenants: Tenants, console: Client, staff: User) -> None:
    ensure_clusters()
    bad = console.post(
        "/staff/clusters/",
        {
            "name": "gcp-eu",
            "provider": "gcp",
            "region": "eu-north",
            "driver": "local",
            "agent_url": "not a url",
            "status": "active",
            **{f"gpu_{g}": "0" for g in ("cpu", "t4", "l4", "a10g", "a100_80gb", "h100", "h200")},
        },
    )
    page = bad.content.decode()
    assert bad.status_code == 400 and "agent&#x27;s URL" in page
    empty = console.post(
        "/staff/clusters/",
        {
            "name": "gcp-eu",
            "provider": "gcp",
            "region": "eu-north",
            "driver": "local",
            "agent_url": "http://10.1.0.5:9101",
            "status": "active",
            **{f"gpu_{g}": "0" for g in ("cpu", "t4", "l4", "a10g", "a100_80gb", "h100", "h200")},
        },
    )
    assert empty.status_code == 400 and "at least one GPU" in empty.content.decode()
    kubernetes = console.post(
        "/staff/clusters/",
        {
            "name": "gke-eu",
            "provider": "gcp",
            "region": "eu-north",
            "driver": "kubernetes",
            "agent_url": "http://10.1.0.5:9101",
            "status": "active",
            **{f"gpu_{g}": "1" for g in ("cpu", "t4", "l4", "a10g", "a100_80gb", "h100", "h200")},
        },
    )
    assert kubernetes.status_code == 400 and "Django admin" in kubernetes.content.decode()
    assert not Cluster.objects.filter(pk="gke-eu").exists()  # never a cluster it could not reach
    inventory = {f"gpu_{g}": "0" for g in ("cpu", "l4", "a10g", "a100_80gb", "h100", "h200")}
    good = {
        "name": "gcp-eu",
        "provider": "gcp",
        "region": "eu-north",
        "driver": "local",
        "agent_url": "http://10.1.0.5:9101",
        "status": "cordoned",
        **inventory,
        "gpu_t4": "4",
    }
    assert console.post("/staff/clusters/", good).status_code == 302
    cluster = Cluster.objects.get(pk="gcp-eu")
    assert (cluster.region, cluster.status, cluster.connection) == (
        "eu-north",
        Cluster.Status.CORDONED,
        {"agent_url": "http://10.1.0.5:9101"},
    )
    assert [(row.gpu_type_id, row.count) for row in ClusterGpu.objects.filter(cluster=cluster)] == [("T4", 4)]
    entry = StaffAuditEntry.objects.get(action="cluster.added")
    assert entry.actor_user == staff and entry.after["inventory"] == {"T4": {"count": 4}}
    duplicate = console.post("/staff/clusters/", good)
    assert duplicate.status_code == 400 and "already exists" in duplicate.content.decode()
    listing = console.get("/staff/clusters/").content.decode()
    assert "gcp-eu" in listing and "T4 ×4" in listing and "Cordoned" in listing


def test_marking_a_cluster_down_stops_routing_there_and_moves_replicas(
    tenants: Tenants, fleet: Fleet, console: Client, staff: User
) -> None:
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    ready = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY)
    assert {replica.cluster.region for replica in ready} == {"us-east", "eu-west"}
    assert {endpoint.region for endpoint in load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].endpoints} == {"us-east", "eu-west"}
    page = console.get("/staff/clusters/").content.decode()
    assert "Mark down" in page and "hx-confirm" in page

    response = console.post("/staff/clusters/local-us-east/down/", {"reason": "power failure in the rack"})
    assert response.status_code == 302
    assert Cluster.objects.get(pk="local-us-east").status == Cluster.Status.DOWN
    # The gateway stops routing there at once (the next snapshot), before any replica moves.
    assert {endpoint.region for endpoint in load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].endpoints} == {"eu-west"}
    staff_entry = StaffAuditEntry.objects.get(action="cluster.marked_down")
    assert (
        staff_entry.actor_user == staff
        and staff_entry.after["replicas_moved"] == 1
        and staff_entry.after["reason"] == "power failure in the rack"
    )
    tenant_entry = AuditEntry.objects.for_org(tenants.org_a).get(action="cluster.marked_down")
    assert tenant_entry.after["deployments"] == [deployment.pk] and tenant_entry.actor_label.endswith("(platform staff)")
    assert not AuditEntry.objects.for_org(tenants.org_b).filter(action="cluster.marked_down").exists()

    fleet.run(deployment, passes=3)  # the control plane replaces the replica in the allowed regions
    ready = list(Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY))
    assert len(ready) == 2 and {replica.cluster_id for replica in ready} == {"local-eu-west"}
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.ACTIVE and deployment.failure_count == 0

    again = console.post("/staff/clusters/local-us-east/down/", follow=True)
    assert "already down" in again.content.decode()
    assert console.post("/staff/clusters/local-us-east/up/").status_code == 302
    assert Cluster.objects.get(pk="local-us-east").status == Cluster.Status.ACTIVE
    assert StaffAuditEntry.objects.filter(action="cluster.marked_up").count() == 1


def test_a_cluster_going_down_never_fails_a_deployment_as_a_crash_loop(tenants: Tenants, fleet: Fleet) -> None:
    Quota.objects.create(organization=tenants.org_a, max_replicas=6, gpus={"CPU": 6})
    deployment = create_deployment(tenants.org_a, name="wide", min_replicas=6, max_replicas=6, allowed_regions=("us-east",))
    fleet.run(deployment, passes=2)
    staff_user = UserFactory(is_staff=True)
    from deployments import cluster_ops

    change = cluster_ops.change_status(_staff_context(staff_user), Cluster.objects.get(pk="local-us-east"), "down", "fire drill")
    assert change.replicas_affected == 6 and change.organizations_affected == 1
    result = fleet.run(deployment, passes=2)
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.DEPLOYING and deployment.failure_count == 0  # waiting for capacity, not failed
    assert "waiting for capacity" in deployment.status_reason and result is not None


def test_draining_moves_each_replica_once_its_replacement_is_ready(tenants: Tenants, fleet: Fleet, admin_api, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROLLOUT_HANDOVER_SECONDS = 3
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    [old] = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, cluster_id="local-us-east")
    response = admin_api.post("/api/v1/admin/clusters/local-us-east/drain/", {"reason": "kernel upgrade"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "draining" and response.json()["replicas_moved"] == 1
    assert AuditEntry.objects.for_org(tenants.org_a).get(action="cluster.draining").after["replicas_moved"] == 1

    fleet.loading.add("memory://local-eu-west/")  # hold the replacement in LOADING
    first = fleet.run(deployment)
    assert len(first.created) == 1 and not first.drained
    old.refresh_from_db()
    assert old.state == Replica.State.READY  # still serving: its replacement is not ready
    assert {e.region for e in load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].endpoints} == {"us-east", "eu-west"}
    deployment.refresh_from_db()
    assert (
        deployment.status == Deployment.Status.UPDATING
        and "moving 1 replica(s) off draining cluster local-us-east" in deployment.status_reason
    )

    fleet.loading.clear()
    fleet.run(deployment, passes=2)
    old.refresh_from_db()
    assert old.state == Replica.State.READY  # its replacement is READY, but not yet for as long as gateways cache replicas
    # Time passes: the replicas elsewhere have been READY for as long as gateways cache them.
    Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, cluster_id="local-eu-west").update(
        ready_at=timezone.now() - timedelta(seconds=3)
    )
    fleet.run(deployment, passes=3)
    old.refresh_from_db()
    assert old.state == Replica.State.STOPPED and old.reason == "drained"
    ready = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY)
    assert len(ready) == 2 and {replica.cluster_id for replica in ready} == {"local-eu-west"}
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.ACTIVE
    clusters = {row["name"]: row for row in admin_api.get("/api/v1/admin/clusters/").json()["results"]}
    assert clusters["local-us-east"]["replicas"] == 0 and clusters["local-eu-west"]["replicas"] == 2


def test_a_draining_cluster_keeps_serving_where_nothing_else_is_allowed(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, name="pinned", min_replicas=1, max_replicas=1, allowed_regions=("us-east",))
    fleet.run(deployment, passes=2)
    from deployments import cluster_ops

    cluster_ops.change_status(_staff_context(UserFactory(is_staff=True)), Cluster.objects.get(pk="local-us-east"), "drain")
    fleet.run(deployment, passes=2)
    [replica] = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
    assert replica.state == Replica.State.READY  # never dropped without a replacement
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.UPDATING and "no free capacity elsewhere in us-east" in deployment.status_reason


def test_cordon_and_up_are_audited_and_cordoned_clusters_take_no_new_replicas(tenants: Tenants, fleet: Fleet, console: Client) -> None:
    assert console.post("/staff/clusters/local-us-east/cordon/", {"reason": "checking disks"}).status_code == 302
    assert Cluster.objects.get(pk="local-us-east").status == Cluster.Status.CORDONED
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    assert {r.cluster_id for r in Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)} == {"local-eu-west"}
    assert console.post("/staff/clusters/local-us-east/up/").status_code == 302
    assert list(StaffAuditEntry.objects.order_by("created_at", "id").values_list("action", flat=True)) == [
        "cluster.cordoned",
        "cluster.marked_up",
    ]
    assert console.post("/staff/clusters/no-such-cluster/down/").status_code == 404


# ---------------------------------------------------------------------------------------
# Platform usage


def test_platform_usage_revenue_and_gpu_utilisation(tenants: Tenants, fleet: Fleet, console: Client) -> None:
    now = timezone.now()
    ModelPrice.objects.create(
        model="chat-default", input_price_per_mtok=Decimal("1"), output_price_per_mtok=Decimal("3"), effective_from=rating.month_start(now)
    )
    _rollup(tenants.org_a, now, requests=10, input_tokens=2_000_000, output_tokens=1_000_000, cost="0.5", model="chat-default")
    _rollup(tenants.org_b, now, requests=5, input_tokens=1_000_000, output_tokens=0, cost="0.25", model="chat-default")
    _rollup(
        tenants.org_b, now - timedelta(days=40), requests=99, input_tokens=1, output_tokens=1, model="chat-default"
    )  # outside the 30 days
    days = platform_stats.usage_per_day(now)
    assert len(days) == 30 and days[-1].requests == 15 and days[-1].input_tokens == 3_000_000 and sum(day.requests for day in days) == 15

    revenue = platform_stats.revenue(now)
    assert revenue.month_to_date == Decimal("6.00") and revenue.paying_tenants == 2  # $5 + $1

    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    gpus = {(row.cluster.name, row.gpu_type): row for row in platform_stats.gpu_utilisation()}
    east = gpus[("local-us-east", "CPU")]
    assert (east.inventory, east.held, east.ready, east.held_percent) == (8, 1, 1, 12.5)
    assert east.gpu_seconds > 0 and 0 < east.month_percent <= 100
    assert gpus[("local-us-east", "T4")].held == 0

    page = console.get("/staff/usage/").content.decode()
    assert "$6.00" in page and "2 paying tenants" in page and "local-us-east" in page and "13%" in page
    assert now.strftime("%Y-%m-%d") in page


def test_the_staff_audit_log_lists_every_staff_change(tenants: Tenants, console: Client, staff: User) -> None:
    from deployments import quotas

    quotas.update_quota(_staff_context(staff), tenants.org_a, requests_per_minute=100)
    staff_ops.add_markup(_staff_context(staff), percent="5", effective_from=_next_hour())
    page = console.get("/staff/audit/").content.decode()
    assert "quota.changed" in page and "price.markup_version_added" in page and "Acme" in page
    with pytest.raises(Exception, match="Only platform staff"):
        StaffContext(user=tenants.owner_a)


def test_quota_changes_reach_the_gateway_snapshot_within_its_cache(tenants: Tenants, admin_api) -> None:  # type: ignore[no-untyped-def]
    assert load_snapshot(tenants.org_a.pk).limits.requests_per_minute == 600
    admin_api.patch(f"/api/v1/admin/tenants/{tenants.org_a.pk}/quota/", {"requests_per_minute": 2}, format="json")
    assert load_snapshot(tenants.org_a.pk).limits.requests_per_minute == 2
    assert settings.GATEWAY_ROUTES_CACHE_SECONDS <= 5  # the browser test waits this out


def test_the_django_admin_shows_quotas_and_cluster_status_read_only(tenants: Tenants) -> None:
    ensure_clusters()
    quota = Quota.objects.create(organization=tenants.org_a, max_replicas=3)
    superuser = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(superuser)
    assert client.get(f"/django-admin/deployments/quota/{quota.pk}/change/").status_code == 200
    assert client.post(f"/django-admin/deployments/quota/{quota.pk}/change/", {"max_replicas": 99}).status_code == 403
    assert client.get("/django-admin/deployments/quota/add/").status_code == 403
    page = client.get("/django-admin/deployments/cluster/local-us-east/change/").content.decode()
    assert 'name="status"' not in page  # shown, not editable: status changes go through the audited console


def test_staff_changes_need_the_csrf_token(tenants: Tenants, staff: User) -> None:
    from rest_framework.test import APIClient

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    url = f"/staff/tenants/{tenants.org_a.pk}/status/"
    assert client.post(url, {"status-status": "suspended", "status-reason": "forged"}).status_code == 403
    client.get(f"/staff/tenants/{tenants.org_a.pk}/")  # sets the CSRF cookie, as the browser would
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    assert client.post(url, {"status-status": "suspended", "status-reason": "real", "csrfmiddlewaretoken": token}).status_code == 302
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(staff)
    assert api.patch(f"/api/v1/admin/tenants/{tenants.org_a.pk}/quota/", {"requests_per_minute": 3}, format="json").status_code == 403
    assert api.get(f"/api/v1/admin/tenants/{tenants.org_a.pk}/quota/").status_code == 200  # reads need no token
    assert StaffAuditEntry.objects.count() == 1
