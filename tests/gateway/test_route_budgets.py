"""A route's monthly budget: what counts towards it (the per-token charges of requests made
through its name, never a dedicated deployment's), the gateway's cap for it, and setting
and reading it in the management API and the console, where only roles that see money
see it. The gateway refusing past it, across processes: tests/gateway/test_spend_limits.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from billing import rating
from billing.models import ModelPrice
from metering import ingest
from routing.gateway.snapshot import load_snapshot
from routing.models import ModelRoute
from tenancy.models import AuditEntry
from tests.conftest import Tenants
from tests.factories import create_provider, create_route
from tests.helpers import session_api
from tests.metering.test_usage_pipeline import _record


def _this_month() -> datetime:
    return max(timezone.now() - timedelta(minutes=3), rating.month_start(timezone.now()))


def test_a_routes_month_is_its_per_token_charges_and_the_gateway_caps_it(tenants: Tenants) -> None:
    ModelPrice.objects.create(
        model="chat", input_price_per_mtok=Decimal(1), output_price_per_mtok=Decimal(1), effective_from=timezone.now() - timedelta(days=40)
    )
    chat = create_route(tenants.org_a, "chat", monthly_budget=Decimal("5.00"))
    create_route(tenants.org_a, "other")
    create_route(tenants.org_b, "chat", monthly_budget=Decimal("5.00"))
    at, million = _this_month(), 10**6
    ingest.write_batch(
        [
            _record(tenants.org_a.pk, "r1", at=at, model="chat", route="chat", input_tokens=million, output_tokens=million),
            # Served by a dedicated deployment: billed as GPU time, not to the route.
            _record(tenants.org_a.pk, "r2", at=at, model="chat", route="chat", deployment_id="dep_x", input_tokens=million),
            _record(tenants.org_a.pk, "r3", at=at, model="other", route="other", cost=Decimal(7)),
            _record(tenants.org_b.pk, "r4", at=at, model="chat", route="chat", input_tokens=3 * million, output_tokens=0),
        ]
    )
    assert rating.route_month_to_date(tenants.org_a, "chat", timezone.now()) == Decimal(2)
    assert rating.route_month_to_date(tenants.org_b, "chat", timezone.now()) == Decimal(3)

    policy = load_snapshot(tenants.org_a.pk).spend
    assert policy is not None and set(policy.routes) == {"chat"}
    cap = policy.routes["chat"]
    assert cap.scope == f"route:{chat.pk}" and cap.code == "route_budget_reached"
    assert (cap.limit_micros, cap.spent_micros) == (5_000_000, 2_000_000)
    assert "The route chat has reached its monthly budget of $5.00" in cap.refusal
    assert "an admin of the organization can raise or remove it in the console (Routing) or the management API" in cap.refusal
    assert policy.caps_for("key_x", "chat") == [cap] and policy.caps_for("key_x", "other") == []
    # The other tenant's route of the same name has its own cap and its own month.
    other_tenant = load_snapshot(tenants.org_b.pk).spend
    assert other_tenant is not None and other_tenant.routes["chat"].spent_micros == 3_000_000
    assert other_tenant.routes["chat"].scope != cap.scope


def _route_body(provider_id: str, **fields: object) -> dict[str, object]:
    return {"name": "chat", "targets": [{"provider": provider_id, "provider_model": "m"}], **fields}


def test_the_api_sets_a_routes_budget_and_only_money_roles_see_it(tenants: Tenants) -> None:
    provider = create_provider(tenants.org_a, name="upstream")
    admin = session_api(tenants.admin_a, tenants.org_a)
    created = admin.post("/api/v1/routes/", _route_body(provider.pk, monthly_budget="25.00"), format="json")
    assert created.status_code == 201 and created.json()["monthly_budget"] == "25.00"
    route_id = created.json()["id"]
    url = f"/api/v1/routes/{route_id}/"

    # A member edits the route without seeing or touching its budget.
    member = session_api(tenants.member_a, tenants.org_a)
    edited = member.put(url, _route_body(provider.pk, max_attempts=2), format="json")
    assert edited.status_code == 200 and "monthly_budget" not in edited.json()
    assert ModelRoute.objects.for_org(tenants.org_a).get(pk=route_id).monthly_budget == Decimal("25.00")
    refused = member.put(url, _route_body(provider.pk, monthly_budget="100"), format="json")
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
    for viewer in (tenants.viewer_a, tenants.member_a):
        seen = session_api(viewer, tenants.org_a)
        assert "monthly_budget" not in seen.get(url).json()
        assert all("monthly_budget" not in row for row in seen.get("/api/v1/routes/").json()["results"])

    # Bad amounts say what to fix; nothing changes.
    for bad in ("-1", "1.234"):
        answer = admin.put(url, _route_body(provider.pk, monthly_budget=bad), format="json")
        assert answer.status_code == 400 and "monthly_budget" in answer.json()["error"]["fields"], answer.content
    assert admin.get(url).json()["monthly_budget"] == "25.00"

    assert admin.put(url, _route_body(provider.pk, monthly_budget="0"), format="json").json()["monthly_budget"] == "0.00"
    lifted = admin.put(url, _route_body(provider.pk, monthly_budget=None), format="json")
    assert lifted.status_code == 200 and lifted.json()["monthly_budget"] is None
    entry = AuditEntry.objects.for_org(tenants.org_a).filter(action="route.updated").order_by("-created_at", "-id").first()
    assert entry is not None and entry.before["monthly_budget"] == "0.00" and entry.after["monthly_budget"] is None

    # Another tenant's owner cannot read or change it.
    outsider = session_api(tenants.owner_b, tenants.org_b)
    assert outsider.get(url).status_code == 404
    assert outsider.put(url, _route_body(provider.pk, monthly_budget="1"), format="json").status_code == 404


def _form(route: ModelRoute, provider_id: str, **fields: object) -> dict[str, object]:
    return {
        "name": route.name,
        "strategy": "weighted",
        "fallbacks": "",
        "max_attempts": 3,
        "attempt_timeout_s": 30,
        "deadline_s": 120,
        "breaker_failures": 5,
        "breaker_cooldown_s": 10,
        "targets-TOTAL_FORMS": 1,
        "targets-INITIAL_FORMS": 0,
        "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 20,
        "targets-0-target": f"provider:{provider_id}",
        "targets-0-provider_model": "m",
        "targets-0-weight": 100,
        **fields,
    }


def test_the_console_sets_a_routes_budget_for_money_roles_only(tenants: Tenants) -> None:
    provider = create_provider(tenants.org_a, name="upstream")
    route = create_route(tenants.org_a, "chat", targets=[((provider, "m"), 100)])
    edit, detail = f"/o/acme/routing/{route.pk}/edit/", f"/o/acme/routing/{route.pk}/"
    admin = Client()
    admin.force_login(tenants.admin_a)
    form_page = admin.get(edit).content.decode()
    assert 'name="monthly_budget"' in form_page and "billed as GPU time, not per route" in form_page

    bad = admin.post(edit, _form(route, provider.pk, monthly_budget="-3"))
    assert bad.status_code == 400 and "greater than or equal to 0" in bad.content.decode()
    bad = admin.post(edit, _form(route, provider.pk, monthly_budget="2.505"))
    assert bad.status_code == 400 and "no more than 2 decimal places" in bad.content.decode()
    assert admin.post(edit, _form(route, provider.pk, monthly_budget="12.50")).status_code == 302
    route.refresh_from_db()
    assert route.monthly_budget == Decimal("12.50")
    assert 'data-testid="route-budget"' in admin.get(detail).content.decode()

    # A member edits the route through a form without the budget, which stays.
    member = Client()
    member.force_login(tenants.member_a)
    assert 'name="monthly_budget"' not in member.get(edit).content.decode()
    assert member.post(edit, _form(route, provider.pk, max_attempts=2, monthly_budget="")).status_code == 302
    route.refresh_from_db()
    assert route.max_attempts == 2 and route.monthly_budget == Decimal("12.50")

    viewer = Client()
    viewer.force_login(tenants.viewer_a)
    page = viewer.get(detail).content.decode()
    assert "12.50" not in page and 'data-testid="route-budget"' not in page
    # The other tenant does not see the route at all.
    outsider = Client()
    outsider.force_login(tenants.owner_b)
    assert outsider.get(f"/o/globex/routing/{route.pk}/").status_code == 404
