"""Stripe through the real `stripe` library against the local Stripe-compatible double
(tests/stripe_server.py), reached through the library's own `base_addresses` setting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from django.test import Client
from django.utils import timezone

from billing import invoices, rating, tasks
from billing.models import BillingAccount, Plan
from billing.stripe import sync as stripe_sync
from billing.stripe.models import MeterPush, MeterPushStatus, StripeAccount, StripeCatalog, StripeWebhookEvent
from tenancy.models import Organization, OrgStatus
from tests.billing.conftest import WEBHOOK_SECRET, StripeDouble
from tests.conftest import Tenants
from tests.helpers import session_api
from tests.stripe_server import sign_payload, webhook_event

WEBHOOK_URL = "/billing/stripe/webhook/"

# The webhook is mounted as config/urls.py mounts it.
pytestmark = pytest.mark.urls("tests.billing.stripe_urlconf")


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def closed_hours(count: int, now: datetime) -> list[datetime]:
    """`count` hours that are over, grace included, oldest first."""
    current = hour_floor(now)
    return [current - timedelta(hours=offset) for offset in range(count + 1, 1, -1)]


def push_now(double: StripeDouble) -> datetime:
    """Now, for tests that push the last few closed hours: in a month's first twelve hours
    (when they would reach into a month whose Stripe invoice is final) twelve hours later,
    the double's clock moved with it."""
    real = timezone.now()
    if real - rating.month_start(real) >= timedelta(hours=12):
        return real
    double.clock(12 * 3600)
    return real + timedelta(hours=12)


def subscribe(org: Organization) -> StripeAccount:
    account = stripe_sync.ensure_subscription(org)
    assert account is not None
    return account


def ledger(org: Organization) -> list[MeterPush]:
    return list(MeterPush.objects.for_org(org).order_by("hour", "revision"))


# ------------------------------------------------------------------- customers and pages


def test_customer_checkout_portal_and_subscription(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    account = stripe_sync.ensure_customer(org)
    assert account is not None and account.customer_id.startswith("cus_")
    again = stripe_sync.ensure_customer(org)
    assert again is not None and again.customer_id == account.customer_id
    customers = stripe_double.state()["customers"]
    assert list(customers) == [account.customer_id]
    assert customers[account.customer_id]["metadata"]["organization_id"] == org.pk
    assert customers[account.customer_id]["email"] == tenants.owner_a.email

    checkout = stripe_sync.checkout_setup_url(org, "https://console.test/ok", "https://console.test/cancel")
    assert checkout is not None and checkout.startswith(f"{stripe_double.url}/c/pay/cs_test_")
    (session,) = stripe_double.state()["checkout_sessions"].values()
    assert session["mode"] == "setup" and session["customer"] == account.customer_id and session["currency"] == "usd"

    portal = stripe_sync.portal_url(org, "https://console.test/billing")
    assert portal is not None and f"{stripe_double.url}/p/session/bps_" in portal

    catalog = stripe_sync.ensure_meters_and_prices()
    assert catalog is not None and catalog.meter_id.startswith("mtr_") and catalog.price_id.startswith("price_")
    state = stripe_double.state()
    meter = state["meters"][catalog.meter_id]
    assert meter["event_name"] == "switchboard_usage"
    assert meter["default_aggregation"] == {"formula": "sum"}
    assert meter["event_time_window"] == "hour"
    assert meter["customer_mapping"] == {"type": "by_id", "event_payload_key": "stripe_customer_id"}
    price = state["prices"][catalog.price_id]
    assert price["unit_amount_decimal"] == "0.0001" and price["currency"] == "usd"
    assert price["recurring"]["usage_type"] == "metered" and price["recurring"]["meter"] == catalog.meter_id
    assert state["products"][catalog.product_id]["name"] == "Switchboard usage"

    subscribed = subscribe(org)
    assert subscribed.subscription_id.startswith("sub_") and subscribed.subscribed_at is not None
    assert subscribe(org).subscription_id == subscribed.subscription_id
    (subscription,) = stripe_double.state()["subscriptions"].values()
    assert subscription["customer"] == account.customer_id
    assert [item["price"]["id"] for item in subscription["items"]["data"]] == [catalog.price_id]

    # A lost catalog row finds the meter and price again instead of making second ones.
    StripeCatalog.objects.all().delete()
    found = stripe_sync.ensure_meters_and_prices()
    assert found is not None and (found.meter_id, found.price_id) == (catalog.meter_id, catalog.price_id)
    assert len(stripe_double.state()["meters"]) == 1 and len(stripe_double.state()["prices"]) == 1


def test_the_api_gives_the_payment_links_to_admins_only(tenants: Tenants, stripe_double: StripeDouble) -> None:
    back = {"return_url": "https://console.test/billing"}
    admin = session_api(tenants.admin_a, tenants.org_a)
    checkout = admin.post("/api/v1/billing/checkout/", back, format="json")
    assert checkout.status_code == 201 and checkout.json()["url"].startswith(f"{stripe_double.url}/c/pay/cs_test_")
    portal = admin.post("/api/v1/billing/portal/", back, format="json")
    assert portal.status_code == 201 and f"{stripe_double.url}/p/session/bps_" in portal.json()["url"]
    assert session_api(tenants.member_a, tenants.org_a).post("/api/v1/billing/checkout/", back, format="json").status_code == 403


def test_a_meter_that_would_add_up_revisions_is_refused(tenants: Tenants, stripe_double: StripeDouble) -> None:
    client = stripe_sync.stripe_client()
    assert client is not None
    client.v1.billing.meters.create({"display_name": "raw", "event_name": "switchboard_usage", "default_aggregation": {"formula": "sum"}})
    with pytest.raises(stripe_sync.StripeNotConfigured, match="hourly pre-aggregated sum"):
        stripe_sync.ensure_meters_and_prices()
    assert not StripeCatalog.objects.exists()


def test_a_customer_whose_answer_was_lost_is_created_once(tenants: Tenants, stripe_double: StripeDouble) -> None:
    stripe_double.outage("lost_response", count=1)
    with pytest.raises(stripe.APIConnectionError):
        stripe_sync.ensure_customer(tenants.org_a)
    assert not StripeAccount.objects.for_org(tenants.org_a).exists()
    account = stripe_sync.ensure_customer(tenants.org_a)  # same idempotency key: Stripe replays the first answer
    assert account is not None
    assert list(stripe_double.state()["customers"]) == [account.customer_id]
    keys = {request["idempotency_key"] for request in stripe_double.requests("/v1/customers")}
    assert keys == {f"switchboard-customer-{tenants.org_a.pk}"}


def test_checkout_completion_sets_the_default_payment_method(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    BillingAccount.objects.create(organization=org, plan=Plan.FREE)  # a new organization, on free credit
    stripe_sync.checkout_setup_url(org, "https://console.test/ok", "https://console.test/cancel")
    (session_id,) = stripe_double.state()["checkout_sessions"]
    session = stripe_double.complete_checkout(session_id)
    response = post_webhook(webhook_event("checkout.session.completed", session))
    assert response.status_code == 200, response.content
    account = StripeAccount.objects.for_org(org).get()
    customer = stripe_double.state()["customers"][account.customer_id]
    assert customer["invoice_settings"]["default_payment_method"].startswith("pm_")
    assert account.subscription_id.startswith("sub_")
    # With a payment method it pays as it goes: no more free-credit limit.
    assert BillingAccount.objects.get(organization=org).plan == Plan.PAY_AS_YOU_GO
    assert invoices.spend_limit(org) is None
    assert BillingAccount.objects.filter(organization=tenants.org_b).first() is None  # the other tenant untouched


# ---------------------------------------------------------------------------- meter events


def test_pushes_run_twice_or_retried_after_a_failure_bill_once(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    account = subscribe(org)
    now = push_now(stripe_double)
    amounts = dict(zip(closed_hours(5, now), [1_250_000, 7, 0, 42_000_001, 3], strict=True))
    expected = sum(amounts.values())

    first = stripe_sync.push_usage(org, amounts, now)
    assert first is not None and len(first.sent) == 4  # the zero hour is not pushed
    second = stripe_sync.push_usage(org, amounts, now)
    assert second is not None and second.sent == [] and second.pending == []
    totals = stripe_double.customer_totals(account.customer_id)
    assert totals == {"count": 4, "raw_sum": expected, "billed_sum": expected}
    assert all(push.status == MeterPushStatus.SENT and push.attempts == 1 for push in ledger(org))
    assert {push.identifier for push in ledger(org)} == {
        stripe_sync.meter_identifier(org, hour) for hour, value in amounts.items() if value
    }

    # The next hour reaches Stripe but the answer is lost: pending here, stored there.
    later_hour = hour_floor(now) - timedelta(hours=7)
    stripe_double.outage("lost_response", count=1)
    lost = stripe_sync.push_usage(org, {later_hour: 500}, now)
    assert lost is not None and lost.pending == [stripe_sync.meter_identifier(org, later_hour)]
    assert MeterPush.objects.for_org(org).get(hour=later_hour).status == MeterPushStatus.PENDING
    retried = stripe_sync.push_usage(org, {later_hour: 500}, now)
    assert retried is not None and retried.already_sent == [stripe_sync.meter_identifier(org, later_hour)]
    row = MeterPush.objects.for_org(org).get(hour=later_hour)
    assert row.status == MeterPushStatus.SENT and row.attempts == 2
    assert stripe_double.customer_totals(account.customer_id) == {"count": 5, "raw_sum": expected + 500, "billed_sum": expected + 500}


@pytest.mark.parametrize("mode", ["503", "drop", "429"])
def test_an_outage_delays_pushes_and_loses_nothing(tenants: Tenants, stripe_double: StripeDouble, mode: str) -> None:
    org = tenants.org_a
    account = subscribe(org)
    now = push_now(stripe_double)
    amounts = dict(zip(closed_hours(6, now), [11, 22, 33, 44, 55, 66], strict=True))

    stripe_double.outage(mode)
    report = stripe_sync.push_usage(org, amounts, now)
    assert report is not None and report.sent == [] and len(report.pending) == 6 and report.stopped
    assert [push.status for push in ledger(org)] == [MeterPushStatus.PENDING] * 6
    assert ledger(org)[0].attempts == 1 and ledger(org)[0].last_error
    report = stripe_sync.push_usage(org, amounts, now)  # still down: still pending, nothing lost
    assert report is not None and len(report.pending) == 6
    assert stripe_double.customer_totals(account.customer_id)["count"] == 0

    stripe_double.outage("off")
    # Pending pushes are retried from the ledger even if this run brings no amounts.
    report = stripe_sync.push_usage(org, {}, now)
    assert report is not None and len(report.sent) == 6 and report.pending == []
    assert all(push.status == MeterPushStatus.SENT for push in ledger(org))
    assert stripe_double.customer_totals(account.customer_id) == {"count": 6, "raw_sum": 231, "billed_sum": 231}


def test_old_hours_are_recorded_not_pushed_and_the_open_hour_waits(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    account = subscribe(org)
    now = push_now(stripe_double)
    current = hour_floor(now)
    ancient = current - timedelta(days=36)
    recent = current - timedelta(hours=2)
    report = stripe_sync.push_usage(org, {ancient: 900, recent: 70, current: 50}, now)
    assert report is not None
    assert report.expired == [stripe_sync.meter_identifier(org, ancient)]
    assert report.not_closed == [current]
    assert report.sent == [stripe_sync.meter_identifier(org, recent)]
    assert MeterPush.objects.for_org(org).get(hour=ancient).status == MeterPushStatus.EXPIRED
    assert not MeterPush.objects.for_org(org).filter(hour=current).exists()
    assert [event["identifier"] for event in stripe_double.meter_events()["events"]] == [stripe_sync.meter_identifier(org, recent)]

    # Within the grace after the hour the open hour still waits...
    just_closed = current + timedelta(hours=1, minutes=2)
    stripe_double.clock(int((just_closed - timezone.now()).total_seconds()))
    report = stripe_sync.push_usage(org, {current: 50}, just_closed)
    assert report is not None and report.not_closed == [current] and report.sent == []
    # ...and goes once the grace is over, timestamped inside its hour.
    later = current + timedelta(hours=1, minutes=6)
    stripe_double.clock(int((later - timezone.now()).total_seconds()))
    report = stripe_sync.push_usage(org, {current: 50}, later)
    assert report is not None and report.sent == [stripe_sync.meter_identifier(org, current)]
    event = stripe_double.meter_events()["events"][-1]
    assert current.timestamp() <= event["timestamp"] < (current + timedelta(hours=1)).timestamp()
    assert stripe_double.customer_totals(account.customer_id)["billed_sum"] == 120


def test_a_push_pending_beyond_the_window_expires(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    subscribe(org)
    now = push_now(stripe_double)
    (hour,) = closed_hours(1, now)
    stripe_double.outage("503")
    stripe_sync.push_usage(org, {hour: 123}, now)
    stripe_double.outage("off")
    much_later = now + timedelta(days=36)
    stripe_double.clock(int((much_later - timezone.now()).total_seconds()))
    report = stripe_sync.push_usage(org, {}, much_later)
    assert report is not None and report.expired == [stripe_sync.meter_identifier(org, hour)]
    assert ledger(org)[0].status == MeterPushStatus.EXPIRED
    assert stripe_double.meter_events()["events"] == []


def test_late_usage_is_a_revision_that_replaces_the_hour(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    account = subscribe(org)
    now = push_now(stripe_double)
    (hour,) = closed_hours(1, now)
    stripe_sync.push_usage(org, {hour: 100}, now)
    report = stripe_sync.push_usage(org, {hour: 150}, now)
    assert report is not None and report.sent == [stripe_sync.meter_identifier(org, hour, 1)]
    assert stripe_sync.push_usage(org, {hour: 150}, now).sent == []
    # The meter keeps each hour's newest event: Stripe bills 150, not 250.
    assert stripe_double.customer_totals(account.customer_id) == {"count": 2, "raw_sum": 250, "billed_sum": 150}
    first, revision = ledger(org)
    assert revision.revision == 1 and revision.timestamp > first.timestamp and revision.timestamp < hour + timedelta(hours=1)


def test_amounts_must_be_whole_utc_hours(tenants: Tenants, stripe_double: StripeDouble) -> None:
    subscribe(tenants.org_a)
    now = push_now(stripe_double)
    (hour,) = closed_hours(1, now)
    with pytest.raises(ValueError, match="not the start of an hour"):
        stripe_sync.push_usage(tenants.org_a, {hour + timedelta(minutes=5): 1}, now)
    with pytest.raises(ValueError, match="non-negative"):
        stripe_sync.push_usage(tenants.org_a, {hour: -1}, now)
    with pytest.raises(ValueError, match="timezone-aware"):
        stripe_sync.push_usage(tenants.org_a, {hour.replace(tzinfo=None): 1}, now)


def test_the_periodic_push_rates_closed_hours_since_the_subscription(tenants: Tenants, stripe_double: StripeDouble) -> None:
    org = tenants.org_a
    subscribe(org)
    subscribe(tenants.org_b)  # before the double's clock moves: the anchor is a month ahead of real time
    month = datetime(2026, 11, 1, tzinfo=UTC)
    first_hour = datetime(2026, 11, 18, 7, tzinfo=UTC)
    StripeAccount.objects.for_org(org).update(subscribed_at=first_hour + timedelta(minutes=20))
    now = first_hour + timedelta(hours=3, minutes=3)
    stripe_double.clock(int((now - timezone.now()).total_seconds()))
    asked: list[tuple[datetime, datetime]] = []

    def rated(organization: Organization, start: datetime, end: datetime) -> dict[datetime, int]:
        assert organization.pk == org.pk
        asked.append((start, end))
        hours = int((end - start) / timedelta(hours=1))
        return {start + timedelta(hours=index): 1000 + index for index in range(hours)}

    # Three minutes into the hour, the hour that just ended still waits for its grace. The
    # month is rated from its start: what it cost before the subscription is folded into
    # the subscription's first hour, so Stripe bills the month's whole invoice.
    report = stripe_sync.push_organization(org.pk, now, rated)
    assert asked == [(month, first_hour + timedelta(hours=2))]
    assert report is not None and len(report.sent) == 2
    before = int((first_hour - month) / timedelta(hours=1))
    assert [push.value for push in ledger(org)] == [sum(1000 + index for index in range(before + 1)), 1000 + before + 1]
    report = stripe_sync.push_organization(org.pk, now + timedelta(minutes=3), rated)
    assert asked[-1] == (month, first_hour + timedelta(hours=3))
    assert report is not None and report.sent == [stripe_sync.meter_identifier(org, first_hour + timedelta(hours=2))]
    assert sorted(stripe_sync.organizations_to_push()) == sorted([org.pk, tenants.org_b.pk])
    # The task itself, with the real rating (org B has no usage: nothing to push).
    assert tasks.push_organization_meter_events(tenants.org_b.pk) == {"sent": 0, "already_sent": 0, "pending": 0, "expired": 0}


def test_another_tenants_ledger_and_customer_are_never_touched(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account_a, account_b = subscribe(tenants.org_a), subscribe(tenants.org_b)
    now = push_now(stripe_double)
    hours = closed_hours(3, now)
    stripe_sync.push_usage(tenants.org_b, {hours[0]: 5}, now)
    stripe_double.outage("503", count=1)
    stripe_sync.push_usage(tenants.org_a, {hour: 10 for hour in hours}, now)
    stripe_sync.push_usage(tenants.org_a, {hour: 10 for hour in hours}, now)
    assert [(push.hour, push.value, push.status) for push in ledger(tenants.org_b)] == [(hours[0], 5, MeterPushStatus.SENT)]
    assert all(push.identifier.startswith(f"{tenants.org_a.pk}:") for push in ledger(tenants.org_a))
    assert stripe_double.customer_totals(account_b.customer_id) == {"count": 1, "raw_sum": 5, "billed_sum": 5}
    assert stripe_double.customer_totals(account_a.customer_id) == {"count": 3, "raw_sum": 30, "billed_sum": 30}
    response = post_webhook(webhook_event("invoice.payment_failed", invoice(account_a.customer_id)))
    assert response.status_code == 200
    tenants.org_b.refresh_from_db()
    assert tenants.org_b.status == OrgStatus.ACTIVE


# ------------------------------------------------------------------- the double's rules


def test_the_double_enforces_stripes_rules_through_the_library(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    client = stripe_sync.stripe_client()
    assert client is not None
    now = int(timezone.now().timestamp())

    def meter_event(**changes: object) -> None:
        params: dict[str, object] = {
            "event_name": "switchboard_usage",
            "payload": {"stripe_customer_id": account.customer_id, "value": "5"},
            "timestamp": now,
        }
        params.update(changes)
        client.v1.billing.meter_events.create(params)

    cases = {
        "payload[value]": {"payload": {"stripe_customer_id": account.customer_id, "value": "1.5"}},
        "timestamp": {"timestamp": now - 36 * 86400},
        "event_name": {"event_name": "nope"},
        "payload[stripe_customer_id]": {"payload": {"stripe_customer_id": "cus_missing", "value": "1"}},
    }
    for param, change in cases.items():
        with pytest.raises(stripe.InvalidRequestError) as raised:
            meter_event(**change)
        assert raised.value.http_status in (400, 404) and raised.value.param == param, raised.value
    with pytest.raises(stripe.InvalidRequestError, match="5 minutes in the future"):
        meter_event(timestamp=now + 600)
    meter_event(identifier="same-one")
    with pytest.raises(stripe.InvalidRequestError, match="An event already exists with identifier same-one"):
        meter_event(identifier="same-one", payload={"stripe_customer_id": account.customer_id, "value": "9"})
    assert stripe_double.customer_totals(account.customer_id)["raw_sum"] == 5

    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"name": "other"}, {"idempotency_key": f"switchboard-customer-{tenants.org_a.pk}"})
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("sk_live_wrong", base_addresses={"api": stripe_double.url}, max_network_retries=0).v1.customers.create(
            {"name": "x"}
        )


# ---------------------------------------------------------------------------- webhooks


def invoice(customer_id: str, number: str = "SB-0001") -> dict[str, object]:
    return {"id": "in_" + number.replace("-", ""), "object": "invoice", "customer": customer_id, "number": number, "status": "open"}


def post_webhook(payload: str, signature: str | None = None) -> Any:
    headers = {"HTTP_STRIPE_SIGNATURE": signature if signature is not None else sign_payload(payload, WEBHOOK_SECRET)}
    return Client().post(WEBHOOK_URL, data=payload, content_type="application/json", **headers)


def _org(org: Organization) -> Organization:
    org.refresh_from_db()
    return org


def test_a_signed_payment_failure_makes_the_org_past_due_with_a_grace(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    created = int(timezone.now().timestamp())
    response = post_webhook(webhook_event("invoice.payment_failed", invoice(account.customer_id), created=created))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    org = _org(tenants.org_a)
    assert org.status == OrgStatus.PAST_DUE and "SB-0001" in org.status_reason
    account.refresh_from_db()
    assert account.grace_until == datetime.fromtimestamp(created, UTC) + timedelta(days=7)

    paid = post_webhook(webhook_event("invoice.paid", invoice(account.customer_id), created=created + 60))
    assert paid.status_code == 200
    org = _org(tenants.org_a)
    assert org.status == OrgStatus.ACTIVE and org.status_reason == ""
    account.refresh_from_db()
    assert account.grace_until is None


def test_a_replayed_event_applies_once(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    now = int(timezone.now().timestamp())
    failed = webhook_event("invoice.payment_failed", invoice(account.customer_id), created=now - 120, event_id="evt_failed_once")
    assert post_webhook(failed).json()["outcome"] == "applied"
    first_grace = StripeAccount.objects.for_org(tenants.org_a).get().grace_until
    assert post_webhook(webhook_event("invoice.paid", invoice(account.customer_id), created=now)).status_code == 200
    replay = post_webhook(failed)
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert _org(tenants.org_a).status == OrgStatus.ACTIVE
    assert StripeWebhookEvent.objects.filter(event_id="evt_failed_once").count() == 1
    assert first_grace is not None


def test_reordered_events_leave_the_newest_state(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    now = int(timezone.now().timestamp())
    assert post_webhook(webhook_event("invoice.paid", invoice(account.customer_id), created=now)).json()["outcome"] == "applied"
    late = post_webhook(webhook_event("invoice.payment_failed", invoice(account.customer_id), created=now - 300))
    assert late.status_code == 200 and late.json()["outcome"] == "stale"
    assert _org(tenants.org_a).status == OrgStatus.ACTIVE
    # The same second: a payment that succeeded wins over one that failed.
    same_second = post_webhook(webhook_event("invoice.payment_failed", invoice(account.customer_id), created=now))
    assert same_second.json()["outcome"] == "stale"
    assert _org(tenants.org_a).status == OrgStatus.ACTIVE


def test_bad_signatures_and_payloads_answer_400_and_change_nothing(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    payload = webhook_event("invoice.payment_failed", invoice(account.customer_id))
    old = int(timezone.now().timestamp()) - 3600
    attempts = {
        "wrong secret": post_webhook(payload, sign_payload(payload, "whsec_not_the_secret")),
        "tampered body": post_webhook(payload.replace("SB-0001", "SB-0002"), sign_payload(payload, WEBHOOK_SECRET)),
        "too old": post_webhook(payload, sign_payload(payload, WEBHOOK_SECRET, timestamp=old)),
        "no header": post_webhook(payload, ""),
        "garbage header": post_webhook(payload, "nonsense"),
        "not json": post_webhook("{", sign_payload("{", WEBHOOK_SECRET)),
        "not an event": post_webhook("[1, 2]", sign_payload("[1, 2]", WEBHOOK_SECRET)),
    }
    for name, response in attempts.items():
        assert response.status_code == 400, name
        message = response.json()["error"]["message"]
        assert "signature" in message.lower() or "payload" in message.lower(), (name, message)
    assert _org(tenants.org_a).status == OrgStatus.ACTIVE
    assert not StripeWebhookEvent.objects.exists()
    assert Client().get(WEBHOOK_URL).status_code == 405


def test_grace_expiry_suspends_and_payment_restores(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    now = timezone.now()
    post_webhook(webhook_event("invoice.payment_failed", invoice(account.customer_id), created=int(now.timestamp())))
    # A second failure (Stripe retrying the payment) does not extend the grace.
    post_webhook(webhook_event("invoice.payment_failed", invoice(account.customer_id), created=int(now.timestamp()) + 86400))
    account.refresh_from_db()
    assert account.grace_until is not None and account.grace_until <= now + timedelta(days=7)
    assert stripe_sync.suspend_overdue(now + timedelta(days=6)) == []
    assert _org(tenants.org_a).status == OrgStatus.PAST_DUE
    assert tasks.suspend_overdue_organizations.run() == []  # the task, today: nothing due
    assert stripe_sync.suspend_overdue(now + timedelta(days=8)) == [tenants.org_a.pk]
    org = _org(tenants.org_a)
    assert org.status == OrgStatus.SUSPENDED and "unpaid" in org.status_reason
    assert _org(tenants.org_b).status == OrgStatus.ACTIVE
    post_webhook(webhook_event("invoice.paid", invoice(account.customer_id), created=int(now.timestamp()) + 8 * 86400))
    assert _org(tenants.org_a).status == OrgStatus.ACTIVE


def test_a_payment_does_not_lift_a_suspension_staff_imposed(tenants: Tenants, stripe_double: StripeDouble) -> None:
    account = subscribe(tenants.org_a)
    Organization.objects.filter(pk=tenants.org_a.pk).update(status=OrgStatus.SUSPENDED, status_reason="Abuse report #7")
    post_webhook(webhook_event("invoice.paid", invoice(account.customer_id)))
    org = _org(tenants.org_a)
    assert org.status == OrgStatus.SUSPENDED and org.status_reason == "Abuse report #7"


def test_unknown_customers_and_other_event_types_are_acknowledged(tenants: Tenants, stripe_double: StripeDouble) -> None:
    assert post_webhook(webhook_event("invoice.paid", invoice("cus_unknown"))).json()["outcome"] == "ignored"
    assert post_webhook(webhook_event("customer.created", {"id": "cus_x", "object": "customer"})).json()["outcome"] == "ignored"


# ---------------------------------------------------------------------------- Stripe off


def test_with_stripe_off_everything_is_a_no_op(tenants: Tenants, stripe_off: None) -> None:
    org = tenants.org_a
    now = timezone.now()
    assert stripe_sync.stripe_client() is None
    assert stripe_sync.ensure_customer(org) is None
    assert stripe_sync.checkout_setup_url(org, "https://x.test/", "https://x.test/") is None
    assert stripe_sync.portal_url(org, "https://x.test/") is None
    assert stripe_sync.ensure_meters_and_prices() is None
    assert stripe_sync.ensure_subscription(org) is None
    assert stripe_sync.push_usage(org, {closed_hours(1, now)[0]: 5}, now) is None
    assert stripe_sync.push_organization(org.pk, now, lambda *args: {}) is None
    assert stripe_sync.organizations_to_push() == []
    assert tasks.push_meter_events.run() == 0
    payload = json.dumps({"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": {}}})
    response = post_webhook(payload, sign_payload(payload, WEBHOOK_SECRET))
    assert response.status_code == 404
    assert "not configured" in response.json()["error"]["message"]
    assert not StripeAccount.objects.unscoped_across_tenants().exists()
    assert not MeterPush.objects.unscoped_across_tenants().exists()
    assert not StripeWebhookEvent.objects.exists()
