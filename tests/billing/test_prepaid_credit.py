"""Owners buy prepaid credit through Stripe Checkout (payment mode): from the console and
the API, against the Stripe double, with the signed webhooks Stripe would send. A paid
session grants once, whatever is replayed; the customer who paid decides who is credited;
the credit raises a free organization's limit and is drawn down on the invoice."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from django.test import Client
from django.utils import timezone

from billing import invoices
from billing.models import BillingAccount, CreditDrawdown, CreditGrant, ModelPrice, Plan
from billing.rating import month_start, next_month
from billing.stripe import sync as stripe_sync
from billing.stripe.models import StripeAccount
from metering import ingest
from tenancy.models import AuditEntry, Organization
from tests.billing.conftest import WEBHOOK_SECRET, StripeDouble
from tests.conftest import Tenants
from tests.helpers import session_api
from tests.metering.test_usage_pipeline import _record
from tests.stripe_server import sign_payload, webhook_event

WEBHOOK_URL = "/billing/stripe/webhook/"
CREDIT_API = "/api/v1/billing/credit/checkout/"

pytestmark = pytest.mark.urls("tests.billing.stripe_urlconf")


def post_webhook(payload: str, signature: str | None = None) -> Any:
    headers = {"HTTP_STRIPE_SIGNATURE": signature if signature is not None else sign_payload(payload, WEBHOOK_SECRET)}
    return Client().post(WEBHOOK_URL, data=payload, content_type="application/json", **headers)


def console(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def buy_through_the_api(user: Any, org: Organization, amount: str) -> str:
    """Starts a credit Checkout; the new session's id at the double."""
    response = session_api(user, org).post(CREDIT_API, {"amount": amount}, format="json")
    assert response.status_code == 201, response.content
    return str(response.json()["url"]).rsplit("/", 1)[1]


def grants(org: Organization) -> list[CreditGrant]:
    return list(CreditGrant.objects.for_org(org))


def test_credit_bought_in_the_console_is_granted_once(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    response = console(tenants.owner_a).post(f"/o/{org.slug}/billing/credit/", {"amount": "25.50"})
    assert response.status_code == 302 and response["Location"].startswith(f"{stripe_double.url}/c/pay/cs_test_")
    session_id = response["Location"].rsplit("/", 1)[1]
    session = stripe_double.state()["checkout_sessions"][session_id]
    customer_id = StripeAccount.objects.for_org(org).get().customer_id
    assert session["mode"] == "payment" and session["customer"] == customer_id
    assert session["amount_total"] == 2550 and session["currency"] == "usd" and session["payment_status"] == "unpaid"
    (line,) = session["line_items"]["data"]
    assert line["price"]["unit_amount"] == 2550 and line["quantity"] == 1 and line["description"] == "Switchboard prepaid credit"
    assert session["metadata"] == {"organization_id": org.pk, "purpose": "prepaid_credit", "amount": "25.50"}
    assert session["success_url"].endswith(f"/o/{org.slug}/billing/?credit=paid")
    assert session["cancel_url"].endswith(f"/o/{org.slug}/billing/?credit=cancelled")
    assert grants(org) == []  # nothing before Stripe says it is paid

    completed = webhook_event("checkout.session.completed", stripe_double.complete_checkout(session_id))
    answer = post_webhook(completed)
    assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
    (grant,) = grants(org)
    assert grant.amount == Decimal("25.50") and grant.expires_at is None
    assert grant.reason == f"Prepaid credit (Stripe Checkout {session_id})" and grant.stripe_checkout_session == session_id
    assert AuditEntry.objects.for_org(org).filter(action="billing.credit_purchased", target_id=grant.pk).count() == 1

    # The same delivery again, the same session in another event, or its late async event.
    assert post_webhook(completed).json()["outcome"] == "duplicate"
    session = stripe_double.state()["checkout_sessions"][session_id]
    assert post_webhook(webhook_event("checkout.session.completed", session)).json()["outcome"] == "duplicate"
    assert post_webhook(webhook_event("checkout.session.async_payment_succeeded", session)).json()["outcome"] == "duplicate"
    assert len(grants(org)) == 1 and grants(tenants.org_b) == []

    page = console(tenants.owner_a).get(f"/o/{org.slug}/billing/?credit=paid").content.decode()
    assert "the credit is added here as soon as Stripe confirms the payment" in page and session_id in page and "$25.50" in page
    cancelled = console(tenants.owner_a).get(f"/o/{org.slug}/billing/?credit=cancelled").content.decode()
    assert "Checkout was cancelled: nothing was charged." in cancelled


def test_buying_credit_raises_a_free_organizations_limit_and_saves_no_card(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    BillingAccount.objects.create(organization=org, plan=Plan.FREE)
    before = invoices.spend_limit(org)
    assert before is not None and before.amount == invoices.free_plan_monthly_credit()
    session_id = buy_through_the_api(tenants.owner_a, org, "20")
    assert post_webhook(webhook_event("checkout.session.completed", stripe_double.complete_checkout(session_id))).status_code == 200
    after = invoices.spend_limit(org)
    assert after is not None and after.amount == before.amount + Decimal("20.00")
    # Paying once saved no payment method, so the organization stays on the free plan.
    assert BillingAccount.objects.get(organization=org).plan == Plan.FREE
    account = StripeAccount.objects.for_org(org).get()
    assert stripe_double.state()["customers"][account.customer_id]["invoice_settings"]["default_payment_method"] is None
    assert account.subscription_id == ""


def test_a_delayed_payment_is_granted_when_it_succeeds(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    session_id = buy_through_the_api(tenants.admin_a, org, "100")
    unpaid = stripe_double.complete_checkout(session_id, delayed=True)
    assert unpaid["payment_status"] == "unpaid"
    assert post_webhook(webhook_event("checkout.session.completed", unpaid)).json()["outcome"] == "unpaid"
    assert grants(org) == []
    paid = webhook_event("checkout.session.async_payment_succeeded", stripe_double.settle_checkout(session_id))
    assert post_webhook(paid).json()["outcome"] == "applied"
    assert [grant.amount for grant in grants(org)] == [Decimal("100.00")]


def test_a_forged_or_tampered_webhook_grants_nothing(tenants: Tenants, stripe_double: StripeDouble) -> None:
    session_id = buy_through_the_api(tenants.owner_a, tenants.org_a, "50")
    payload = webhook_event("checkout.session.completed", stripe_double.complete_checkout(session_id))
    forged = post_webhook(payload, sign_payload(payload, "whsec_not_the_secret"))
    assert forged.status_code == 400 and "signature" in forged.json()["error"]["message"].lower()
    tampered = payload.replace('"amount_total": 5000', '"amount_total": 500000')
    assert tampered != payload
    assert post_webhook(tampered, sign_payload(payload, WEBHOOK_SECRET)).status_code == 400
    assert grants(tenants.org_a) == [] and grants(tenants.org_b) == []


def test_the_paying_customer_decides_who_is_credited(tenants: Tenants, stripe_double: StripeDouble) -> None:
    a, b = tenants.org_a, tenants.org_b
    session_a = stripe_double.complete_checkout(buy_through_the_api(tenants.owner_a, a, "30"))
    session_b = stripe_double.complete_checkout(buy_through_the_api(tenants.owner_b, b, "40"))

    # A's session naming B in its metadata still credits A, the organization that paid.
    renamed = {**session_a, "metadata": {**session_a["metadata"], "organization_id": b.pk}}
    assert post_webhook(webhook_event("checkout.session.completed", renamed)).json()["outcome"] == "applied"
    assert [grant.amount for grant in grants(a)] == [Decimal("30.00")] and grants(b) == []

    # B's paid session presented with A's customer cannot be granted again, to anyone.
    assert post_webhook(webhook_event("checkout.session.completed", session_b)).json()["outcome"] == "applied"
    borrowed = {**session_b, "customer": session_a["customer"], "metadata": {**session_b["metadata"], "organization_id": a.pk}}
    assert post_webhook(webhook_event("checkout.session.completed", borrowed)).json()["outcome"] == "duplicate"
    assert [grant.amount for grant in grants(a)] == [Decimal("30.00")]
    assert [grant.amount for grant in grants(b)] == [Decimal("40.00")]

    # A customer that is nobody's, or none at all: nothing is granted.
    stranger = {**session_a, "id": "cs_test_stranger", "customer": "cus_unknown"}
    assert post_webhook(webhook_event("checkout.session.completed", stranger)).json()["outcome"] == "ignored"
    anonymous = {**session_a, "id": "cs_test_anonymous", "customer": None}
    assert post_webhook(webhook_event("checkout.session.completed", anonymous)).json()["outcome"] == "ignored"
    assert len(grants(a)) == 1 and len(grants(b)) == 1


def test_stripes_amount_total_is_granted_not_the_metadata(tenants: Tenants, stripe_double: StripeDouble) -> None:
    session = stripe_double.complete_checkout(buy_through_the_api(tenants.owner_a, tenants.org_a, "60"))
    discounted = {**session, "amount_total": 4500}  # e.g. a promotion code applied in Checkout
    assert post_webhook(webhook_event("checkout.session.completed", discounted)).json()["outcome"] == "applied"
    assert [grant.amount for grant in grants(tenants.org_a)] == [Decimal("45.00")]
    # Sessions that are not credit purchases are not granted.
    other = {**session, "id": "cs_test_other", "metadata": {"organization_id": tenants.org_a.pk}}
    assert post_webhook(webhook_event("checkout.session.completed", other)).json()["outcome"] == "ignored"
    free = {**session, "id": "cs_test_free", "amount_total": 0}
    assert post_webhook(webhook_event("checkout.session.completed", free)).json()["outcome"] == "ignored"
    assert len(grants(tenants.org_a)) == 1


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("4.99", "from $5 to $10000"),
        ("10000.01", "from $5 to $10000"),
        ("-5", "from $5 to $10000"),
        ("1e999999", "from $5 to $10000"),
        ("5.001", "whole cents"),
        ("NaN", "number"),
        ("twenty", "number"),
        ("", ""),
    ],
)
def test_amounts_outside_the_limits_are_refused_saying_why(tenants: Tenants, stripe_double: StripeDouble, amount: str, says: str) -> None:
    api = session_api(tenants.owner_a, tenants.org_a).post(CREDIT_API, {"amount": amount}, format="json")
    assert api.status_code == 400
    error = api.json()["error"]
    assert "amount" in error["fields"] and says.lower() in json.dumps(error).lower()
    page = console(tenants.owner_a).post(f"/o/{tenants.org_a.slug}/billing/credit/", {"amount": amount})
    assert page.status_code == 400 and 'id="id_amount"' in page.content.decode()
    assert says.lower() in page.content.decode().lower()
    assert stripe_double.state()["checkout_sessions"] == {}


def test_only_admins_and_owners_buy_credit(tenants: Tenants, stripe_double: StripeDouble) -> None:
    for user in (tenants.member_a, tenants.viewer_a):
        assert session_api(user, tenants.org_a).post(CREDIT_API, {"amount": "25"}, format="json").status_code == 403
        assert console(user).post(f"/o/{tenants.org_a.slug}/billing/credit/", {"amount": "25"}).status_code == 403
    # Another tenant's owner cannot buy for this organization.
    assert console(tenants.owner_b).post(f"/o/{tenants.org_a.slug}/billing/credit/", {"amount": "25"}).status_code == 404
    assert stripe_double.state()["checkout_sessions"] == {}
    owner = session_api(tenants.owner_a, tenants.org_a).post(
        CREDIT_API, {"amount": "25", "return_url": "https://app.example/b"}, format="json"
    )
    assert owner.status_code == 201
    (session,) = stripe_double.state()["checkout_sessions"].values()
    assert session["success_url"] == session["cancel_url"] == "https://app.example/b"


def test_without_stripe_or_while_it_is_down_buying_says_so(tenants: Tenants, stripe_double: StripeDouble, settings: Any) -> None:
    stripe_double.outage("503")
    down = session_api(tenants.owner_a, tenants.org_a).post(CREDIT_API, {"amount": "25"}, format="json")
    assert down.status_code == 503 and "nothing was charged" in down.json()["error"]["message"]
    page = console(tenants.owner_a).post(f"/o/{tenants.org_a.slug}/billing/credit/", {"amount": "25"})
    assert page.status_code == 400 and "nothing was charged" in page.content.decode()
    stripe_double.outage("off")

    settings.STRIPE_SECRET_KEY = ""
    off = session_api(tenants.owner_a, tenants.org_a).post(CREDIT_API, {"amount": "25"}, format="json")
    assert off.status_code == 409 and "not connected" in off.json()["error"]["message"]
    page = console(tenants.owner_a).post(f"/o/{tenants.org_a.slug}/billing/credit/", {"amount": "25"}, follow=True)
    assert "Payments are not connected" in page.content.decode()
    assert "Buy credit with Stripe" not in console(tenants.owner_a).get(f"/o/{tenants.org_a.slug}/billing/").content.decode()


def test_the_invoice_draws_down_bought_credit(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    session_id = buy_through_the_api(tenants.owner_a, org, "5")
    post_webhook(webhook_event("checkout.session.completed", stripe_double.complete_checkout(session_id)))
    (grant,) = grants(org)
    ModelPrice.objects.create(
        model="m",
        input_price_per_mtok=Decimal("2"),
        output_price_per_mtok=Decimal("0"),
        effective_from=timezone.now() - timedelta(days=400),
    )
    now = timezone.now()
    at = max(now - timedelta(minutes=10), month_start(now), grant.granted_at)
    ingest.write_batch([_record(org.pk, "bought", at=at, input_tokens=3_000_000, output_tokens=0)])  # $6.00
    ingest.write_batch([_record(tenants.org_b.pk, "other", at=at, input_tokens=10**6, output_tokens=0)])

    running = session_api(tenants.owner_a, org).get("/api/v1/billing/").json()
    assert running["running_invoice"]["subtotal"] == "6.00" and running["running_invoice"]["total"] == "1.00"
    (credit,) = running["credits"]
    assert credit["id"] == grant.pk and credit["amount"] == "5.00" and credit["expires_at"] is None

    invoice = invoices.close_period(org, month_start(now), now=next_month(month_start(now)) + timedelta(hours=1))
    assert (invoice.subtotal, invoice.credits_applied, invoice.total) == (Decimal("6.00"), Decimal("5.00"), Decimal("1.00"))
    assert [(drawdown.grant_id, drawdown.amount) for drawdown in CreditDrawdown.objects.filter(invoice=invoice)] == [
        (grant.pk, Decimal("5.00"))
    ]
    after = session_api(tenants.owner_a, org).get("/api/v1/billing/").json()
    assert after["credits"][0]["remaining"] == "0.00"


def _credits(user: Any, org: Organization) -> dict[str, Any]:
    (credit,) = session_api(user, org).get("/api/v1/billing/").json()["credits"]
    return credit


def test_a_refund_or_a_dispute_takes_back_the_unspent_credit_it_bought(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org, owner = tenants.org_a, tenants.owner_a
    other = buy_through_the_api(tenants.owner_b, tenants.org_b, "10")  # the other tenant's purchase is untouched throughout
    post_webhook(webhook_event("checkout.session.completed", stripe_double.complete_checkout(other)))
    session = stripe_double.complete_checkout(buy_through_the_api(owner, org, "20"))
    post_webhook(webhook_event("checkout.session.completed", session))
    (grant,) = grants(org)
    assert grant.stripe_payment_intent == session["payment_intent"] and grant.stripe_payment_intent.startswith("pi_")
    ModelPrice.objects.create(
        model="m", input_price_per_mtok=Decimal("2"), output_price_per_mtok=Decimal(0), effective_from=timezone.now() - timedelta(days=400)
    )
    now = timezone.now()
    ingest.write_batch(
        [_record(org.pk, "used", at=max(now - timedelta(minutes=10), month_start(now), grant.granted_at), input_tokens=3 * 10**6)]
    )

    # Refunds: Stripe sends the charge's running total, so a replay or an older total
    # delivered late changes nothing.
    charge = {"id": "ch_credit", "object": "charge", "payment_intent": session["payment_intent"], "amount": 2000, "currency": "usd"}
    assert post_webhook(webhook_event("charge.refunded", {**charge, "amount_refunded": 500})).status_code == 200
    assert post_webhook(webhook_event("charge.refunded", {**charge, "amount_refunded": 800})).status_code == 200
    post_webhook(webhook_event("charge.refunded", {**charge, "amount_refunded": 500}))
    assert (_credits(owner, org)["remaining"], _credits(owner, org)["withdrawn"]) == ("12.00", "8.00")

    # A dispute holds the rest while open: the running invoice charges the usage instead.
    opened = int(now.timestamp())
    dispute = {"id": "dp_credit", "object": "dispute", "payment_intent": session["payment_intent"], "charge": "ch_credit", "amount": 1200}
    post_webhook(webhook_event("charge.dispute.created", {**dispute, "status": "needs_response"}, created=opened))
    assert _credits(owner, org)["remaining"] == "0.00"
    running = session_api(owner, org).get("/api/v1/billing/").json()["running_invoice"]
    assert (running["subtotal"], running["total"]) == ("6.00", "6.00")
    # Won: given back; an update from before the win, delivered after it, changes nothing.
    post_webhook(webhook_event("charge.dispute.closed", {**dispute, "status": "won"}, created=opened + 60))
    post_webhook(webhook_event("charge.dispute.updated", {**dispute, "status": "under_review"}, created=opened + 30))
    assert _credits(owner, org)["remaining"] == "12.00"
    assert session_api(owner, org).get("/api/v1/billing/").json()["running_invoice"]["total"] == "0.00"

    withdrawals = AuditEntry.objects.for_org(org).filter(action="billing.credit_withdrawn").order_by("created_at", "id")
    assert [(entry.after["refunded"], entry.after["disputed"]) for entry in withdrawals] == [
        ("5.00", "0.00"),
        ("8.00", "0.00"),
        ("8.00", "12.00"),
        ("8.00", "0.00"),
    ]
    assert _credits(tenants.owner_b, tenants.org_b)["remaining"] == "10.00"
    assert not AuditEntry.objects.for_org(tenants.org_b).filter(action="billing.credit_withdrawn").exists()


def test_credit_spent_before_its_refund_stays_spent(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    session = stripe_double.complete_checkout(buy_through_the_api(tenants.owner_a, org, "5"))
    post_webhook(webhook_event("checkout.session.completed", session))
    (grant,) = grants(org)
    ModelPrice.objects.create(
        model="m", input_price_per_mtok=Decimal("2"), output_price_per_mtok=Decimal(0), effective_from=timezone.now() - timedelta(days=400)
    )
    now = timezone.now()
    ingest.write_batch(
        [_record(org.pk, "spent", at=max(now - timedelta(minutes=10), month_start(now), grant.granted_at), input_tokens=10**6)]
    )
    invoices.close_period(org, month_start(now), now=next_month(month_start(now)) + timedelta(hours=1))  # draws $2 of the $5

    refund = {"id": "ch_x", "object": "charge", "payment_intent": session["payment_intent"], "amount": 500, "amount_refunded": 500}
    post_webhook(webhook_event("charge.refunded", refund))
    assert _credits(tenants.owner_a, org)["remaining"] == "0.00"  # never below zero
    entry = AuditEntry.objects.for_org(org).get(action="billing.credit_withdrawn")
    assert entry.after["spent_before"] == "2.00"  # for staff: already spent on a closed invoice


def test_the_double_checks_payment_line_items_as_stripe_does(tenants: Tenants, stripe_double: StripeDouble) -> None:
    client = stripe_sync.stripe_client()
    assert client is not None
    base: dict[str, Any] = {"mode": "payment", "success_url": "https://console.test/ok"}
    price_data: dict[str, Any] = {"currency": "usd", "unit_amount": 700, "product_data": {"name": "x"}}
    item: dict[str, Any] = {"price_data": price_data, "quantity": 3}
    made = client.v1.checkout.sessions.create({**base, "line_items": [item, item]})  # type: ignore[typeddict-item]
    assert made.amount_total == 4200 and made.payment_status == "unpaid"
    no_currency = {"unit_amount": 700, "product_data": {"name": "x"}}
    refused = {
        "line_items": {**base},
        "line_items[0][price_data][currency]": {**base, "line_items": [{**item, "price_data": no_currency}]},
        "line_items[0][price_data][unit_amount]": {**base, "line_items": [{**item, "price_data": {**price_data, "unit_amount": -1}}]},
        "line_items[0][quantity]": {**base, "line_items": [{"price_data": price_data}]},
    }
    for param, params in refused.items():
        with pytest.raises(stripe.InvalidRequestError) as error:
            client.v1.checkout.sessions.create(params)  # type: ignore[arg-type]
        assert error.value.param == param
    ten_cents = {**base, "line_items": [{"price_data": {**price_data, "unit_amount": 10}, "quantity": 1}]}
    with pytest.raises(stripe.InvalidRequestError, match="at least"):
        client.v1.checkout.sessions.create(ten_cents)  # type: ignore[arg-type]
