"""The money invariant, property-tested across surfaces. For random traffic of two tenants
(priced tokens and external providers, replayed and late events), a dedicated replica's
GPU time, price versions on random hour boundaries (tokens, GPU, markup) and credit:

- the invoice's lines are the events and GPU-seconds each priced on its own at the version
  in force at its hour (an oracle written here, not the rating code);
- what is pushed to Stripe hour by hour sums to the invoice's total, to the cent, an
  enterprise month's committed minimum included;
- the Usage page's GPU figure is the invoice's GPU lines, exactly;
- through the Stripe double, after late events and price versions on hours already
  pushed, what Stripe's meter bills for the month is the invoice's total, and usage that
  arrives once Stripe's invoice is final is carried so both sides agree again;
- the management API's running invoice is the Billing page's;
- the other tenant's traffic changes none of it."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import invoices, rating
from billing.models import BillingAccount, CarriedAdjustment, CreditGrant, ModelPrice, Plan, ProviderMarkup
from billing.stripe import reconcile
from billing.stripe import sync as stripe_sync
from billing.stripe.models import MeterPush, StripeAccount, StripeCatalog
from deployments.models import Deployment, DeploymentRevision, GpuPrice, Replica, ReplicaEvent
from metering import dashboards, ingest
from metering.dashboards import DashboardParams
from metering.models import UsageEvent, UsageRollup
from metering.records import UsageRecord
from tenancy.models import Organization
from tests.billing.conftest import StripeDouble
from tests.conftest import Tenants
from tests.factories import create_deployment
from tests.metering.test_gpu_seconds import PROV, READY, STOP, P, add_replica
from tests.metering.test_usage_pipeline import _record

MONTH = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = 30  # traffic in the month's first 30 hours
NOW = MONTH + timedelta(days=3)
END = rating.next_month(MONTH) + timedelta(hours=1)
MILLION = Decimal(1_000_000)

prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("20"), places=6)
versions = st.lists(st.tuples(st.integers(1, HOURS - 1), prices, prices), max_size=3, unique_by=lambda v: v[0])
event = st.fixed_dictionaries(
    {
        "hour": st.integers(0, HOURS - 1),
        "minute": st.integers(0, 59),
        "model": st.sampled_from(["llama", "ext"]),  # the model served
        # The name the caller used: a route's name moves no one between price rules.
        "called": st.sampled_from(["llama", "ext", "assistant", "cheap"]),
        "input_tokens": st.integers(0, 3_000_000),
        "output_tokens": st.integers(0, 500_000),
        "cost": st.decimals(min_value=Decimal(0), max_value=Decimal("3"), places=12),
        "replayed": st.booleans(),
    }
)


def _in_force(rows: list[tuple[datetime, object]], at: datetime) -> object:
    return max((row for row in rows if row[0] <= at), key=lambda row: row[0])[1]


def _oracle(
    events: list[dict[str, object]],
    token_rows: list[tuple[datetime, tuple[Decimal, Decimal]]],
    markup_rows: list[tuple[datetime, Decimal]],
    gpu_rows: list[tuple[datetime, Decimal]],
    started: datetime,
    stopped: datetime,
) -> dict[str, Decimal]:
    """The oracle: each event priced on its own at the version in force at its time, GPU
    time second by second of each price's stretch; per line, exact."""
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        at = MONTH + timedelta(hours=e["hour"], minutes=e["minute"])  # type: ignore[arg-type]
        if e["model"] == "llama":
            input_price, output_price = _in_force(token_rows, at)  # type: ignore[misc]
            expected[f"llama in {input_price}"] += e["input_tokens"] * input_price / MILLION  # type: ignore[operator]
            expected[f"llama out {output_price}"] += e["output_tokens"] * output_price / MILLION  # type: ignore[operator]
        elif e["cost"]:
            percent = _in_force(markup_rows, at)
            assert isinstance(percent, Decimal)
            # Keyed by value, as rating keys its lines (10 and 10.00 are one markup).
            expected[f"ext {percent.normalize()}"] += e["cost"] * (1 + percent / 100)  # type: ignore[operator]
    edges = sorted({started, stopped, *(start for start, _ in gpu_rows if started < start < stopped)})
    for begin, finish in zip(edges, edges[1:], strict=False):
        price = _in_force(gpu_rows, begin)
        expected[f"gpu {price}"] += Decimal((finish - begin).total_seconds()) * price / 3600  # type: ignore[operator]
    return expected


def _records(org_id: str, events: list[dict[str, object]]) -> list[UsageRecord]:
    """The drawn events as the gateway would record them, in the month's first hours."""
    return [
        _record(
            org_id,
            f"req_{n}",
            at=MONTH + timedelta(hours=e["hour"], minutes=e["minute"]),  # type: ignore[arg-type]
            model=e["called"],
            route=e["called"],
            served_model=e["model"],
            input_tokens=e["input_tokens"],
            output_tokens=e["output_tokens"],
            cost=e["cost"] if e["model"] == "ext" else Decimal(0),
        )
        for n, e in enumerate(events)
    ]


def _reset() -> None:
    """Hypothesis runs every example in the one test's database: start each from nothing."""
    for model in (UsageEvent, UsageRollup):
        model.objects.unscoped_across_tenants().delete()
    for model in (ModelPrice, ProviderMarkup, GpuPrice):
        model.objects.all().delete()
    CreditGrant.objects.unscoped_across_tenants().delete()
    BillingAccount.objects.unscoped_across_tenants().delete()
    for replica_model in (ReplicaEvent, Replica):
        replica_model.objects.unscoped_across_tenants().delete()
    Deployment.objects.unscoped_across_tenants().update(current_revision=None)
    for owned in (DeploymentRevision, Deployment):
        owned.objects.unscoped_across_tenants().delete()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    events=st.lists(event, min_size=1, max_size=25),
    token_versions=versions,
    gpu_versions=st.lists(st.tuples(st.integers(1, HOURS - 1), prices), max_size=3, unique_by=lambda v: v[0]),
    markups=st.lists(st.tuples(st.integers(1, HOURS - 1), st.decimals(min_value=0, max_value=40, places=2)), max_size=2),
    run=st.tuples(st.integers(0, HOURS - 2), st.integers(60, 20 * 3600)),
    credit=st.decimals(min_value=0, max_value=5, places=2),
    minimum=st.one_of(st.none(), st.decimals(min_value=0, max_value=40, places=2)),
)
def test_invoice_pushes_pages_and_api_agree(  # noqa: PLR0913
    tenants: Tenants,
    events: list[dict[str, object]],
    token_versions: list[tuple[int, Decimal, Decimal]],
    gpu_versions: list[tuple[int, Decimal]],
    markups: list[tuple[int, Decimal]],
    run: tuple[int, int],
    credit: Decimal,
    minimum: Decimal | None,
) -> None:
    _reset()

    # The book: a base version long before, then the drawn ones on whole hours.
    token_rows = [(MONTH - timedelta(days=40), (Decimal("0.5"), Decimal("1.5")))]
    token_rows += [(MONTH + timedelta(hours=h), (i, o)) for h, i, o in token_versions]
    for start, (input_price, output_price) in token_rows:
        ModelPrice.objects.create(model="llama", input_price_per_mtok=input_price, output_price_per_mtok=output_price, effective_from=start)
    markup_rows = [(MONTH - timedelta(days=40), Decimal("10"))] + [(MONTH + timedelta(hours=h), p) for h, p in dict(markups).items()]
    for start, percent in markup_rows:
        ProviderMarkup.objects.create(percent=percent, effective_from=start)
    gpu_rows = [(MONTH - timedelta(days=40), Decimal("0.9"))] + [(MONTH + timedelta(hours=h), p) for h, p in gpu_versions]
    for start, price in gpu_rows:
        GpuPrice.objects.create(gpu_type_id="T4", price_per_hour=price, effective_from=start)
    if minimum is not None:  # an enterprise deal with a committed monthly minimum
        BillingAccount.objects.create(organization=tenants.org_a, plan=Plan.ENTERPRISE, committed_monthly_minimum=minimum)
    if credit:
        CreditGrant.objects.create(organization=tenants.org_a, amount=credit, reason="drawn", granted_at=MONTH - timedelta(days=1))

    # Traffic: replays write nothing twice; the late half arrives after a first rating.
    records = _records(tenants.org_a.pk, events)
    ingest.write_batch(records[::2] + [_record(tenants.org_b.pk, "b_noise", at=MONTH + timedelta(hours=2), cost=Decimal("50"))])
    invoices.draft(tenants.org_a, MONTH, now=NOW)
    ingest.write_batch(records[1::2] + [r for r, e in zip(records, events, strict=True) if e["replayed"]])
    deployment = create_deployment(tenants.org_a, name="gpu", gpu_type="T4")
    started = MONTH + timedelta(hours=run[0])
    stopped = started + timedelta(seconds=run[1])
    add_replica(deployment, [(P, started), (PROV, started), (READY, started + timedelta(seconds=30)), (STOP, stopped)])

    expected = _oracle(events, token_rows, markup_rows, gpu_rows, started, stopped)

    draft = invoices.draft(tenants.org_a, MONTH, now=NOW)
    got = sorted(rating.round_to_cents(line.exact_amount) for line in draft.lines if line.exact_amount)
    assert got == sorted(rating.round_to_cents(amount) for amount in expected.values() if amount)
    assert draft.total == max(Decimal(0), max(draft.subtotal, minimum or Decimal(0)) - credit)

    # Stripe is pushed exactly the invoice's total over the month, committed minimum included.
    pushed = invoices.hourly_amounts_micros(tenants.org_a, MONTH, rating.next_month(MONTH), now=END)
    assert all(amount >= 0 for amount in pushed.values())
    closed = invoices.draft(tenants.org_a, MONTH, now=END)
    assert Decimal(sum(pushed.values())) / MILLION == closed.total

    # The Usage page's GPU time is the invoice's, exactly.
    usage = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="7d"), show_cost=True, now=NOW)
    gpu_lines = sum((line.exact_amount for line in draft.lines if line.kind == "gpu"), Decimal(0))
    assert Decimal(usage["totals"]["gpu_cost"]) == gpu_lines.quantize(Decimal("0.000001"))


def _fresh_stripe(double: StripeDouble, org: Organization) -> StripeAccount:
    """Each example starts Stripe from nothing: a new customer, meter and subscription."""
    double.reset()
    for model in (MeterPush, CarriedAdjustment, StripeAccount):
        model.objects.unscoped_across_tenants().delete()
    StripeCatalog.objects.all().delete()
    double.clock(0)
    account = stripe_sync.ensure_subscription(org)
    assert account is not None
    StripeAccount.objects.for_org(org).update(subscribed_at=MONTH)
    return account


def _stripe_month(double: StripeDouble, account: StripeAccount, now: datetime) -> int:
    """What Stripe bills for the month: its meter's summary for the month, plus the pending
    invoice items (they land on the invoice after), in micro-dollars."""
    double.clock(int((now - timezone.now()).total_seconds()))
    client, catalog = stripe_sync.stripe_client(), stripe_sync.ensure_meters_and_prices()
    assert client is not None and catalog is not None
    return reconcile.stripe_total(client, catalog.meter_id, account.customer_id, MONTH, rating.next_month(MONTH))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    events=st.lists(event, min_size=1, max_size=16),
    token_versions=versions,
    late=st.tuples(st.integers(0, 27 * 24), st.integers(1, 4_000_000)),
    credit=st.decimals(min_value=0, max_value=3, places=2),
    minimum=st.one_of(st.none(), st.decimals(min_value=0, max_value=20, places=2)),
)
def test_what_stripe_bills_is_the_invoice_after_late_events_and_price_changes(  # noqa: PLR0913
    tenants: Tenants,
    stripe_double: StripeDouble,
    events: list[dict[str, object]],
    token_versions: list[tuple[int, Decimal, Decimal]],
    late: tuple[int, int],
    credit: Decimal,
    minimum: Decimal | None,
) -> None:
    """Hours pushed as they close; then late and replayed events and price versions on
    earlier hours; reconciled in the month's finalization grace: Stripe's meter for the
    month is the invoice's total. Then usage arrives after Stripe's invoice is final: it is
    carried, and Stripe's month plus the carried item is the re-rated month, to the cent."""
    _reset()
    org = tenants.org_a
    account = _fresh_stripe(stripe_double, org)
    ModelPrice.objects.create(
        model="llama", input_price_per_mtok=Decimal("0.5"), output_price_per_mtok=Decimal("1.5"), effective_from=MONTH - timedelta(days=40)
    )
    ProviderMarkup.objects.create(percent=Decimal(10), effective_from=MONTH - timedelta(days=40))
    if minimum is not None:
        BillingAccount.objects.create(organization=org, plan=Plan.ENTERPRISE, committed_monthly_minimum=minimum)
    if credit:
        CreditGrant.objects.create(organization=org, amount=credit, reason="drawn", granted_at=MONTH - timedelta(days=1))
    records = _records(org.pk, events)
    ingest.write_batch(records[::2] + [_record(tenants.org_b.pk, "b_noise", at=MONTH + timedelta(hours=2), cost=Decimal("50"))])
    pushed_at = MONTH + timedelta(hours=HOURS + 1, minutes=10)
    stripe_double.clock(int((pushed_at - timezone.now()).total_seconds()))
    stripe_sync.push_organization(org.pk, pushed_at)

    # After the push: the late half, replays, and price versions on hours already pushed.
    ingest.write_batch(records[1::2] + [r for r, e in zip(records, events, strict=True) if e["replayed"]])
    for hour, input_price, output_price in token_versions:
        start = MONTH + timedelta(hours=hour)
        ModelPrice.objects.create(model="llama", input_price_per_mtok=input_price, output_price_per_mtok=output_price, effective_from=start)
    in_grace = rating.next_month(MONTH) + timedelta(minutes=30)
    stripe_double.clock(int((in_grace - timezone.now()).total_seconds()))
    report = reconcile.reconcile_organization(org.pk, now=in_grace)
    assert report is not None and report.stopped == "" and report.unsettled == []
    invoice_total = invoices.draft(org, MONTH, now=END).total
    assert _stripe_month(stripe_double, account, in_grace) == rating.to_micros(invoice_total)

    # Usage that arrives once Stripe's invoice is final is carried onto the next one.
    ingest.write_batch([_record(org.pk, "after_final", at=MONTH + timedelta(hours=late[0]), model="llama", input_tokens=late[1])])
    after = rating.next_month(MONTH) + timedelta(hours=2)
    stripe_double.clock(int((after - timezone.now()).total_seconds()))
    report = reconcile.reconcile_organization(org.pk, now=after)
    assert report is not None and report.stopped == ""
    carried = sum(item["amount"] for item in stripe_double.invoice_items()) * 10_000
    rerated = invoices.draft(org, MONTH, now=after).metered_total
    assert _stripe_month(stripe_double, account, after) + carried == rating.to_micros(rerated)
    following = invoices.draft(org, rating.next_month(MONTH), now=after)
    assert rating.to_micros(following.carried_adjustments) == carried
    assert not CarriedAdjustment.objects.for_org(tenants.org_b).exists()
