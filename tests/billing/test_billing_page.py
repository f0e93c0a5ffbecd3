"""The console's Billing page, budgets and their alerts, and invoice downloads."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

from django.core import mail
from django.test import Client

from billing import budgets
from billing.models import BudgetAlert, CreditGrant, ModelPrice
from metering import ingest
from tenancy.models import AuditEntry
from tenancy.network import OutboundPolicy
from tests.conftest import Tenants
from tests.factories import closed_invoice
from tests.metering.test_usage_pipeline import _record

NOW = datetime.now(UTC)


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _spend(tenants: Tenants, dollars: int, request_id: str = "spent") -> None:
    """Usage this month worth `dollars`: that many million input tokens at $1."""
    ModelPrice.objects.get_or_create(
        model="llama",
        organization=None,
        effective_from=NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=40),
        defaults={"input_price_per_mtok": Decimal(1), "output_price_per_mtok": Decimal(1)},
    )
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk,
                request_id,
                at=NOW - timedelta(minutes=5),
                model="llama",
                route="llama",
                input_tokens=dollars * 1_000_000,
                output_tokens=0,
            )
        ]
    )


def test_owners_see_the_running_invoice_credits_and_past_invoices(tenants: Tenants) -> None:
    _spend(tenants, 3)
    CreditGrant.objects.create(organization=tenants.org_a, amount=Decimal("1.25"), reason="welcome", granted_at=NOW - timedelta(days=40))
    invoice = closed_invoice(tenants.org_a)
    html = _client(tenants.owner_a).get(f"/o/{tenants.org_a.slug}/billing/").content.decode()
    assert "llama: input tokens" in html and "$3.00" in html and "Credit" in html and "$1.75" in html  # total after the credit
    assert f"/o/{tenants.org_a.slug}/billing/invoices/{invoice.id}.pdf" in html
    assert "Payments are not connected" in html  # Stripe is off on the embedded default


def test_members_below_admin_see_no_money(tenants: Tenants) -> None:
    _spend(tenants, 3)
    for user in (tenants.member_a, tenants.viewer_a):
        response = _client(user).get(f"/o/{tenants.org_a.slug}/billing/")
        html = response.content.decode()
        assert response.status_code == 200 and "Billing is for owners and admins" in html
        assert "$" not in html.split("<main", 1)[1]
    invoice = closed_invoice(tenants.org_a)
    assert _client(tenants.member_a).get(f"/o/{tenants.org_a.slug}/billing/invoices/{invoice.id}.csv").status_code == 403


def test_invoices_download_as_csv_and_pdf(tenants: Tenants) -> None:
    invoice = closed_invoice(tenants.org_a)
    client = _client(tenants.admin_a)
    csv_body = client.get(f"/o/{tenants.org_a.slug}/billing/invoices/{invoice.id}.csv")
    assert csv_body["Content-Type"].startswith("text/csv") and "Total,,,,0.00" in csv_body.content.decode()
    pdf = client.get(f"/o/{tenants.org_a.slug}/billing/invoices/{invoice.id}.pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert client.get(f"/o/{tenants.org_a.slug}/billing/invoices/{invoice.id}.xls").status_code == 404


def test_budget_form_validates_and_is_audited(tenants: Tenants, settings) -> None:  # type: ignore[no-untyped-def]
    settings.OUTBOUND_POLICY = OutboundPolicy()
    client = _client(tenants.admin_a)
    url = f"/o/{tenants.org_a.slug}/billing/budget/"
    bad = client.post(url, {"monthly_budget": "-5"})
    assert bad.status_code == 400 and "greater than or equal to 0" in bad.content.decode()
    private = client.post(url, {"monthly_budget": "100", "alert_webhook_url": "http://127.0.0.1:9/hook"})
    assert private.status_code == 400 and "public internet" in private.content.decode()
    assert client.post(url, {"monthly_budget": "100", "alert_webhook_url": ""}).status_code == 302
    assert AuditEntry.objects.filter(organization=tenants.org_a, action="billing.budget_changed").count() == 1
    assert _client(tenants.member_a).post(url, {"monthly_budget": "1"}).status_code == 403


def test_budget_alerts_at_50_80_and_100_percent_once_each(tenants: Tenants, settings) -> None:  # type: ignore[no-untyped-def]
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.OUTBOUND_POLICY = OutboundPolicy.parse(["127.0.0.1"])  # the operator allows the local receiver
    client = _client(tenants.owner_a)
    client.post(
        f"/o/{tenants.org_a.slug}/billing/budget/",
        {"monthly_budget": "10", "alert_webhook_url": f"http://127.0.0.1:{server.server_port}/hook"},
    )
    try:
        _spend(tenants, 6)
        assert [alert.threshold_percent for alert in budgets.check(tenants.org_a)] == [50]
        assert budgets.check(tenants.org_a) == []  # sent once
        _spend(tenants, 5, "more")  # $11 of a $10 budget
        assert [alert.threshold_percent for alert in budgets.check(tenants.org_a)] == [80, 100]
    finally:
        server.shutdown()
    assert [message["threshold_percent"] for message in received] == [50, 80, 100] and received[-1]["spend"] == "11.00"
    assert [m.to for m in mail.outbox] == [[tenants.owner_a.email]] * 3 and "100%" in mail.outbox[-1].subject
    assert budgets.check(tenants.org_b) == [] and not BudgetAlert.objects.for_org(tenants.org_b).exists()
    assert "100%" in client.get(f"/o/{tenants.org_a.slug}/billing/").content.decode()


def test_the_budget_bar_shows_this_months_spend_against_the_budget(tenants: Tenants) -> None:
    client = _client(tenants.owner_a)
    url = f"/o/{tenants.org_a.slug}/billing/"
    assert 'data-testid="budget-progress"' not in client.get(url).content.decode()  # no budget, no bar
    client.post(url + "budget/", {"monthly_budget": "10", "alert_webhook_url": ""})
    _spend(tenants, 3)
    html = client.get(url).content.decode()
    assert "$3.00 of the $10.00 monthly budget spent (30%)" in html
    assert 'max="10.00" high="8.000" optimum="0" value="3.00"' in html
    assert 'data-testid="budget-progress"' not in _client(tenants.owner_b).get(f"/o/{tenants.org_b.slug}/billing/").content.decode()
