"""The reconciliation with Stripe (billing.stripe.reconcile), through the real `stripe`
library against the Stripe-compatible double, with real usage rated by the price book:
hours changed after the push's lookback, prices changed on the hour, events lost at
Stripe, outages and lost answers, and months whose Stripe invoice is final, carried onto
the next invoice. The double's clock is moved to each moment the test runs at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import invoices, rating, tasks
from billing.models import CarriedAdjustment, ModelPrice
from billing.stripe import reconcile
from billing.stripe import sync as stripe_sync
from billing.stripe.models import MeterPush, MeterPushStatus, StripeAccount
from metering import ingest
from tenancy.models import Organization
from tests.billing.conftest import StripeDouble
from tests.conftest import Tenants
from tests.metering.test_usage_pipeline import _record

pytestmark = pytest.mark.urls("tests.billing.stripe_urlconf")

NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)
MILLION = Decimal(1_000_000)


@pytest.fixture
def priced(tenants: Tenants) -> None:
    """llama: $1 per million input tokens, $2 per million output tokens."""
    ModelPrice.objects.create(
        model="llama", input_price_per_mtok=Decimal(1), output_price_per_mtok=Decimal(2), effective_from=NOVEMBER - timedelta(days=60)
    )


def use(org: Organization, request_id: str, at: datetime, input_tokens: int, output_tokens: int = 0) -> None:
    ingest.write_batch(
        [
            _record(
                org.pk,
                request_id,
                at=at,
                model="llama",
                route="llama",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=Decimal(0),
            )
        ]
    )


def subscribe_since(org: Organization, since: datetime) -> StripeAccount:
    account = stripe_sync.ensure_subscription(org)  # at real time: the anchor is a month ahead of it
    assert account is not None
    StripeAccount.objects.for_org(org).update(subscribed_at=since)
    account.refresh_from_db()
    return account


def at(double: StripeDouble, moment: datetime) -> datetime:
    double.clock(int((moment - timezone.now()).total_seconds()))
    return moment


def meter(double: StripeDouble, account: StripeAccount, start: datetime, end: datetime) -> dict[datetime, int]:
    client, catalog = stripe_sync.stripe_client(), stripe_sync.ensure_meters_and_prices()
    assert client is not None and catalog is not None
    return reconcile.stripe_hourly_values(client, catalog.meter_id, account.customer_id, start, end)


def rated(org: Organization, start: datetime, end: datetime, now: datetime) -> dict[datetime, int]:
    return {hour: amount for hour, amount in invoices.hourly_amounts_micros(org, start, end, now=now).items() if amount}


def month_total_micros(org: Organization, month: datetime, now: datetime) -> int:
    return rating.to_micros(invoices.draft(org, month, now=now).metered_total)


def test_hours_changed_after_the_lookback_are_corrected_from_stripes_own_summaries(
    tenants: Tenants, stripe_double: StripeDouble, priced: None
) -> None:
    org = tenants.org_a
    account = subscribe_since(org, NOVEMBER + timedelta(minutes=20))
    subscribe_since(tenants.org_b, NOVEMBER)
    use(tenants.org_b, "b1", NOVEMBER + timedelta(days=1, hours=10), 9_000_000)
    use(org, "r1", datetime(2026, 11, 2, 10, 15, tzinfo=UTC), 1_000_000)  # $1.00
    use(org, "r2", datetime(2026, 11, 5, 23, 30, tzinfo=UTC), 250_000, 100_000)  # $0.45, the day's last hour
    use(org, "r3", datetime(2026, 11, 6, 0, 10, tzinfo=UTC), 500_000)  # $0.50, the next day's first

    # The periodic push ran only on the 6th: its 48 hours miss the 2nd.
    now = at(stripe_double, datetime(2026, 11, 6, 3, 7, tzinfo=UTC))
    stripe_sync.push_organization(org.pk, now)
    assert datetime(2026, 11, 2, 10, tzinfo=UTC) not in meter(stripe_double, account, NOVEMBER, now.replace(minute=0))

    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and report.stopped == ""
    assert report.corrections == [stripe_sync.meter_identifier(org, datetime(2026, 11, 2, 10, tzinfo=UTC))]
    end = datetime(2026, 11, 6, 2, tzinfo=UTC)
    assert meter(stripe_double, account, NOVEMBER, end) == rated(org, NOVEMBER, end, now)
    assert sum(meter(stripe_double, account, NOVEMBER, end).values()) == month_total_micros(org, NOVEMBER, now) == 1_950_000

    # Late usage in an hour pushed days ago, beyond the push's lookback: the next run
    # replaces the hour with a revision (the meter keeps the hour's newest event).
    use(org, "r4", datetime(2026, 11, 2, 10, 55, tzinfo=UTC), 0, 1_000_000)  # $2.00
    now = at(stripe_double, now + timedelta(hours=1))
    assert stripe_sync.push_organization(org.pk, now).sent == []  # type: ignore[union-attr]
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and report.corrections == [stripe_sync.meter_identifier(org, datetime(2026, 11, 2, 10, tzinfo=UTC), 1)]
    end = datetime(2026, 11, 6, 3, tzinfo=UTC)
    assert meter(stripe_double, account, NOVEMBER, end) == rated(org, NOVEMBER, end, now)
    assert sum(meter(stripe_double, account, NOVEMBER, end).values()) == month_total_micros(org, NOVEMBER, now) == 3_950_000

    # Replayed, the run finds nothing to do; the other tenant's meter is its own business.
    again = reconcile.reconcile_organization(org.pk, now=now + timedelta(minutes=30))
    assert again is not None and again.corrections == [] and again.unsettled == [] and again.carried == []
    assert again.rated_micros == again.stripe_micros == 3_950_000
    assert not MeterPush.objects.for_org(tenants.org_b).exists()


def test_a_price_version_on_the_hour_corrects_that_hour_only(tenants: Tenants, stripe_double: StripeDouble, priced: None) -> None:
    org = tenants.org_a
    account = subscribe_since(org, NOVEMBER)
    use(org, "before", datetime(2026, 11, 3, 13, 30, tzinfo=UTC), 1_000_000)
    use(org, "after", datetime(2026, 11, 3, 14, 30, tzinfo=UTC), 1_000_000)
    now = at(stripe_double, datetime(2026, 11, 3, 16, 10, tzinfo=UTC))
    stripe_sync.push_organization(org.pk, now)
    assert set(meter(stripe_double, account, NOVEMBER, now.replace(minute=0)).values()) == {1_000_000}

    # Staff correct the price from 14:00 on, after both hours reached Stripe.
    ModelPrice.objects.create(
        model="llama",
        input_price_per_mtok=Decimal("1.25"),
        output_price_per_mtok=Decimal(2),
        effective_from=datetime(2026, 11, 3, 14, tzinfo=UTC),
    )
    now = at(stripe_double, datetime(2026, 11, 7, 9, 0, tzinfo=UTC))  # long past the push's lookback
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None
    assert report.corrections == [stripe_sync.meter_identifier(org, datetime(2026, 11, 3, 14, tzinfo=UTC), 1)]
    held = meter(stripe_double, account, NOVEMBER, datetime(2026, 11, 7, 8, tzinfo=UTC))
    assert held == {datetime(2026, 11, 3, 13, tzinfo=UTC): 1_000_000, datetime(2026, 11, 3, 14, tzinfo=UTC): 1_250_000}
    assert sum(held.values()) == month_total_micros(org, NOVEMBER, now)


def test_lost_events_outages_and_lost_answers_heal_without_double_billing(
    tenants: Tenants, stripe_double: StripeDouble, priced: None
) -> None:
    org = tenants.org_a
    account = subscribe_since(org, NOVEMBER)
    for day in range(2, 5):
        use(org, f"d{day}", datetime(2026, 11, day, 13 if day == 2 else 8, 5, tzinfo=UTC), 1_000_000 * day)
    now = at(stripe_double, datetime(2026, 11, 4, 12, 10, tzinfo=UTC))
    stripe_sync.push_organization(org.pk, now)
    now = at(stripe_double, datetime(2026, 11, 5, 9, 0, tzinfo=UTC))
    lost_hour = datetime(2026, 11, 3, 8, tzinfo=UTC)
    assert stripe_double.lose_meter_event(stripe_sync.meter_identifier(org, lost_hour))
    end = datetime(2026, 11, 5, 8, tzinfo=UTC)
    expected = month_total_micros(org, NOVEMBER, now)
    assert expected == 9_000_000 and sum(meter(stripe_double, account, NOVEMBER, end).values()) == 6_000_000

    # Stripe unreachable: the run stops before deciding anything.
    stripe_double.outage("503")
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and report.stopped and report.corrections == []
    assert not MeterPush.objects.for_org(org).filter(revision__gt=0).exists()

    # The correction reaches Stripe but its answer is lost: pending here, stored there.
    stripe_double.outage("lost_response", count=1, path="/v1/billing/meter_events")
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and report.stopped and report.corrections == []
    pending = MeterPush.objects.for_org(org).get(hour=lost_hour, revision=1)
    assert pending.status == MeterPushStatus.PENDING
    report = reconcile.reconcile_organization(org.pk, now=now + timedelta(minutes=1))
    assert report is not None and report.corrections == [pending.identifier] and report.stopped == ""
    assert MeterPush.objects.for_org(org).get(pk=pending.pk).status == MeterPushStatus.SENT
    assert sum(meter(stripe_double, account, NOVEMBER, end).values()) == expected
    assert [event["identifier"] for event in stripe_double.meter_events()["events"]].count(pending.identifier) == 1

    # A correction sent a moment ago is not second-guessed while summaries catch up.
    stripe_double.lose_meter_event(pending.identifier)
    report = reconcile.reconcile_organization(org.pk, now=now + timedelta(minutes=5))
    assert report is not None and report.unsettled == [lost_hour] and report.corrections == []
    report = reconcile.reconcile_organization(org.pk, now=now + timedelta(minutes=30))
    assert report is not None and report.corrections == [stripe_sync.meter_identifier(org, lost_hour, 2)]
    assert sum(meter(stripe_double, account, NOVEMBER, end).values()) == expected


def test_a_final_month_is_carried_onto_the_next_invoice_on_both_sides(tenants: Tenants, stripe_double: StripeDouble, priced: None) -> None:
    org = tenants.org_a
    account = subscribe_since(org, NOVEMBER)
    use(org, "nov", datetime(2026, 11, 20, 9, 0, tzinfo=UTC), 3_000_000)  # $3.00
    now = at(stripe_double, datetime(2026, 11, 30, 23, 10, tzinfo=UTC))
    stripe_sync.push_organization(org.pk, now)
    reconcile.reconcile_organization(org.pk, now=now)

    # Late usage of November's last hour, while Stripe's November invoice is still open
    # (its finalization grace): corrected on the meter, nothing carried.
    use(org, "last-hour", datetime(2026, 11, 30, 23, 40, tzinfo=UTC), 500_000)  # $0.50
    now = at(stripe_double, DECEMBER + timedelta(minutes=20))
    assert stripe_sync.stripe_open_from(now) == NOVEMBER
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and report.corrections == [stripe_sync.meter_identifier(org, datetime(2026, 11, 30, 23, tzinfo=UTC))]
    # Once the invoice is final, a November push still pending is not sent into it...
    use(org, "later", datetime(2026, 11, 25, 12, 0, tzinfo=UTC), 0, 1_000_000)  # $2.00, after November's invoice
    use(org, "dec", DECEMBER + timedelta(hours=1, minutes=5), 1_000_000)  # $1.00 in December
    now = at(stripe_double, DECEMBER + timedelta(hours=2, minutes=10))
    assert stripe_sync.stripe_open_from(now) == DECEMBER
    stripe_sync.push_organization(org.pk, now)
    assert sum(meter(stripe_double, account, NOVEMBER, DECEMBER).values()) == 3_500_000

    # ...it is carried: an adjustment of $2.00 for November, a pending invoice item at Stripe
    # (whose answer is lost once: the retry replays the same idempotency key).
    stripe_double.outage("lost_response", count=1, path="/v1/invoiceitems")
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and report.stopped and report.adjustments_sent == []
    assert report is not None
    (adjustment,) = CarriedAdjustment.objects.for_org(org)
    assert adjustment.amount == Decimal("2.00") and adjustment.source_period_start == NOVEMBER
    assert adjustment.rated_micros == 5_500_000 and adjustment.stripe_micros == 3_500_000
    report = reconcile.reconcile_organization(org.pk, now=now + timedelta(minutes=1))
    assert report is not None and report.carried == [] and report.adjustments_sent == [adjustment.pk]
    (item,) = stripe_double.invoice_items()
    assert (item["customer"], item["amount"], item["currency"]) == (account.customer_id, 200, "usd")
    assert item["metadata"]["switchboard_adjustment"] == adjustment.pk

    # Replayed: nothing carried twice, nothing sent twice.
    report = reconcile.reconcile_organization(org.pk, now=now + timedelta(hours=1))
    assert report is not None and report.carried == [] and report.adjustments_sent == []
    assert len(stripe_double.invoice_items()) == 1 and CarriedAdjustment.objects.for_org(org).count() == 1

    # November's own invoice stays what Stripe billed it; December's carries the $2.00, on
    # our side as on Stripe's (its meter for December plus the pending item).
    assert invoices.draft(org, DECEMBER, now=now).adjustments == [CarriedAdjustment.objects.for_org(org).get()]
    december = invoices.draft(org, DECEMBER, now=DECEMBER + timedelta(days=31))
    stripe_now = at(stripe_double, DECEMBER + timedelta(hours=3, minutes=10))
    stripe_sync.push_organization(org.pk, stripe_now)
    stripe_december = sum(meter(stripe_double, account, DECEMBER, DECEMBER + timedelta(hours=3)).values()) + sum(
        item["amount"] * 10_000 for item in stripe_double.invoice_items()
    )
    assert december.total == Decimal("3.00") and rating.to_micros(december.total) == stripe_december
    assert not CarriedAdjustment.objects.for_org(tenants.org_b).exists()


def test_a_price_lowered_after_the_month_is_refunded_on_the_next_invoice(
    tenants: Tenants, stripe_double: StripeDouble, priced: None
) -> None:
    org = tenants.org_a
    subscribe_since(org, NOVEMBER)
    use(org, "nov", datetime(2026, 11, 10, 9, 0, tzinfo=UTC), 4_000_000)  # $4.00
    now = at(stripe_double, datetime(2026, 11, 10, 11, 0, tzinfo=UTC))
    stripe_sync.push_organization(org.pk, now)
    # An enterprise price agreed for November, entered in December.
    ModelPrice.objects.create(
        organization=org, model="llama", input_price_per_mtok=Decimal("0.5"), output_price_per_mtok=Decimal(1), effective_from=NOVEMBER
    )
    now = at(stripe_double, DECEMBER + timedelta(hours=5))
    report = reconcile.reconcile_organization(org.pk, now=now)
    assert report is not None and len(report.carried) == 1 and report.adjustments_sent == report.carried
    (item,) = stripe_double.invoice_items()
    assert item["amount"] == -200
    december = invoices.draft(org, DECEMBER, now=now)
    assert december.carried_adjustments == Decimal("-2.00") and december.total == Decimal("-2.00")
    # The closed invoice keeps it.
    closed = invoices.close_period(org, DECEMBER, now=DECEMBER + timedelta(days=31, hours=1))
    assert closed.carried_adjustments == Decimal("-2.00") and closed.total == Decimal("-2.00")


def test_the_task_reports(tenants: Tenants, stripe_double: StripeDouble, priced: None) -> None:
    subscribe_since(tenants.org_a, NOVEMBER)
    assert stripe_sync.organizations_to_push() == [tenants.org_a.pk]  # what the hourly task fans out over
    result = tasks.reconcile_stripe_organization.run(tenants.org_a.pk)
    assert result is not None and result["stopped"] == "" and result["carried"] == 0
    assert tasks.reconcile_stripe_organization.run(tenants.org_b.pk) is None  # no subscription


def test_with_stripe_off_reconciliation_does_nothing(tenants: Tenants, stripe_off: None) -> None:
    assert reconcile.reconcile_organization(tenants.org_a.pk) is None
    assert tasks.reconcile_stripe.run() == 0
