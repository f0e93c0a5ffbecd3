"""Billing in the management API, as on the Billing page: the running invoice (the same
figures, to the cent), closed invoices with CSV and PDF, credits, the limit, the budget,
the payment links; money only for roles that may see it; another tenant's invoice is 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from billing import invoices
from billing.models import CreditGrant, ModelPrice
from billing.rating import month_start
from deployments.models import Quota
from metering import ingest
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.helpers import key_api, session_api
from tests.metering.test_usage_pipeline import _record


def _usage(tenants: Tenants) -> None:
    ModelPrice.objects.create(
        model="m", input_price_per_mtok=Decimal("2"), output_price_per_mtok=Decimal("4"), effective_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    at = max(timezone.now() - timedelta(minutes=10), month_start(timezone.now()))  # this month, even just after it began
    ingest.write_batch([_record(tenants.org_a.pk, f"r{n}", at=at, input_tokens=1000, output_tokens=2000) for n in range(50)])
    ingest.write_batch([_record(tenants.org_b.pk, "b-secret", at=at, input_tokens=10**6, output_tokens=0)])


def test_the_running_invoice_in_the_api_is_the_billing_pages_to_the_cent(tenants: Tenants) -> None:
    _usage(tenants)
    CreditGrant.objects.create(organization=tenants.org_a, amount=Decimal("0.25"), reason="welcome")
    Quota.objects.create(organization=tenants.org_a, monthly_spend_cap=Decimal("100"), gpus={"CPU": 8})
    body = session_api(tenants.owner_a, tenants.org_a).get("/api/v1/billing/").json()
    page = invoices.preview(tenants.org_a)
    running = body["running_invoice"]
    assert running["subtotal"] == str(page.subtotal) == "0.50"  # 50 x (1,000 x $2 + 2,000 x $4) / 1M = $0.50
    assert running["total"] == str(page.total) == "0.25" and running["credits"][0]["amount"] == "0.25"
    assert [(line["description"], line["amount"]) for line in running["lines"]] == [
        ("m: input tokens", "0.10"),
        ("m: output tokens", "0.40"),
    ]
    assert body["spend_limit"] == {"amount": "100.00", "reason": "monthly spend cap of $100.00", "lifted_by": invoices.CAP_LIFTED_BY}
    assert body["credits"][0]["remaining"] == "0.25" and body["payments_connected"] is False
    assert "b-secret" not in str(body) and "1000000" not in str(body)


def test_money_is_only_for_roles_that_may_see_it(tenants: Tenants) -> None:
    allowed = [session_api(tenants.owner_a, tenants.org_a), session_api(tenants.admin_a, tenants.org_a)]
    allowed.append(key_api(issue_key(tenants.org_a, ["read", "write"]).plaintext))
    refused = [session_api(tenants.member_a, tenants.org_a), session_api(tenants.viewer_a, tenants.org_a)]
    refused.append(key_api(issue_key(tenants.org_a, ["read"]).plaintext))
    for api in allowed:
        assert api.get("/api/v1/billing/").status_code == 200
        assert api.get("/api/v1/billing/invoices/").status_code == 200
    for api in refused:
        answer = api.get("/api/v1/billing/")
        assert answer.status_code == 403 and "admin" in answer.json()["error"]["message"]
        assert api.get("/api/v1/billing/invoices/").status_code == 403


def test_closed_invoices_with_lines_csv_and_pdf_and_another_tenants_is_404(tenants: Tenants) -> None:
    _usage(tenants)
    now = timezone.now()
    month = invoices.rating.month_start(now)
    later = invoices.rating.next_month(month) + timedelta(hours=1)
    mine = invoices.close_period(tenants.org_a, month, now=later)
    theirs = invoices.close_period(tenants.org_b, month, now=later)
    api = session_api(tenants.owner_a, tenants.org_a)
    listed = api.get("/api/v1/billing/invoices/").json()["results"]
    assert [invoice["id"] for invoice in listed] == [mine.pk] and listed[0]["total"] == str(mine.total) == "0.50"
    detail = api.get(f"/api/v1/billing/invoices/{mine.pk}/").json()
    assert sum(Decimal(line["amount"]) for line in detail["lines"]) == Decimal(detail["subtotal"])
    csv = api.get(f"/api/v1/billing/invoices/{mine.pk}/csv/")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv") and b"m: output tokens" in csv.content
    pdf = api.get(f"/api/v1/billing/invoices/{mine.pk}/pdf/")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert api.get(f"/api/v1/billing/invoices/{mine.pk}/xls/").status_code == 404
    for path in (f"/api/v1/billing/invoices/{theirs.pk}/", f"/api/v1/billing/invoices/{theirs.pk}/pdf/"):
        assert api.get(path).status_code == 404


def test_budget_and_payment_links(tenants: Tenants) -> None:
    api = session_api(tenants.admin_a, tenants.org_a)
    saved = api.put("/api/v1/billing/budget/", {"monthly_budget": "120.50", "alert_webhook_url": ""}, format="json")
    assert saved.status_code == 200 and saved.json()["monthly_budget"] == "120.50"
    bad = api.put("/api/v1/billing/budget/", {"monthly_budget": "-3", "alert_webhook_url": ""}, format="json")
    assert bad.status_code == 400 and "monthly_budget" in bad.json()["error"]["fields"]
    inside = api.put("/api/v1/billing/budget/", {"monthly_budget": "10", "alert_webhook_url": "http://169.254.169.254/"}, format="json")
    assert inside.status_code == 400  # webhooks to internal addresses are refused
    off = api.post("/api/v1/billing/checkout/", {"return_url": "https://console.example/billing/"}, format="json")
    assert off.status_code == 409 and "not connected" in off.json()["error"]["message"]
