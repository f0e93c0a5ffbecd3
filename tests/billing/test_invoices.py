"""Rating and invoices: totals equal the individually priced events to the cent, each event
at the price version in force at its time, sub-cent prices kept exact, credits and plans,
and closed invoices immutable."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import invoices, rating
from billing.models import BillingAccount, CreditGrant, Invoice, ModelPrice, Plan, ProviderMarkup
from deployments import services as deployment_services
from deployments.models import GpuPrice, Quota
from metering import dashboards, ingest
from metering.dashboards import DashboardParams
from tests.conftest import Tenants
from tests.factories import create_deployment
from tests.metering.test_gpu_seconds import DRAIN, LOAD, PROV, READY, STOP, P, add_replica
from tests.metering.test_usage_pipeline import _record

MONTH = datetime(2026, 10, 1, tzinfo=UTC)
CHANGE = MONTH + timedelta(days=12, hours=7)  # a price change in the middle of the month
AFTER = datetime(2026, 11, 15, tzinfo=UTC)
MILLION = Decimal(1_000_000)


def _price_book() -> None:
    ModelPrice.objects.create(
        model="llama",
        input_price_per_mtok=Decimal("0.150000123"),
        output_price_per_mtok=Decimal("0.6"),
        effective_from=MONTH - timedelta(days=40),
    )
    ModelPrice.objects.create(
        model="llama", input_price_per_mtok=Decimal("0.2"), output_price_per_mtok=Decimal("0.8000001"), effective_from=CHANGE
    )
    ProviderMarkup.objects.create(percent=Decimal("5"), effective_from=MONTH - timedelta(days=40))
    ProviderMarkup.objects.create(percent=Decimal("7.5"), effective_from=CHANGE)


def _individually_priced(events: list[dict[str, object]]) -> dict[str, Decimal]:
    """Each event priced on its own, at the version in force at its time, then summed per
    line and rounded once."""
    lines: dict[str, Decimal] = defaultdict(Decimal)
    for event in events:
        late = event["at"] >= CHANGE  # type: ignore[operator]
        if event["model"] == "llama":
            input_price, output_price = (Decimal("0.2"), Decimal("0.8000001")) if late else (Decimal("0.150000123"), Decimal("0.6"))
            lines[f"llama input {late}"] += event["input_tokens"] * input_price / MILLION  # type: ignore[operator]
            lines[f"llama output {late}"] += event["output_tokens"] * output_price / MILLION  # type: ignore[operator]
        else:
            lines[f"provider {late}"] += event["cost"] * (Decimal("1.075") if late else Decimal("1.05"))  # type: ignore[operator]
    return {name: amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) for name, amount in lines.items() if amount}


usage = st.lists(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["llama", "gpt-x"]),
            "minutes": st.integers(0, 30 * 24 * 60 - 1),
            "input_tokens": st.integers(0, 2_000_000),
            "output_tokens": st.integers(0, 200_000),
            "cost": st.decimals(min_value=0, max_value=Decimal("3"), places=12),
        }
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=usage)
def test_invoice_total_equals_the_individually_priced_events(tenants: Tenants, drawn: list[dict[str, object]]) -> None:
    from metering.models import UsageEvent, UsageRollup

    UsageEvent.objects.unscoped_across_tenants().delete()
    UsageRollup.objects.unscoped_across_tenants().delete()
    ModelPrice.objects.all().delete()
    ProviderMarkup.objects.all().delete()
    _price_book()
    events = [{**e, "at": MONTH + timedelta(minutes=e["minutes"])} for e in drawn]  # type: ignore[arg-type]
    records = [
        _record(
            tenants.org_a.pk,
            f"req_{i}",
            at=e["at"],
            model=e["model"],
            route=e["model"],
            input_tokens=e["input_tokens"],
            output_tokens=e["output_tokens"],
            cost=e["cost"],
        )
        for i, e in enumerate(events)
    ]
    # The other tenant's usage never shows on this invoice.
    records.append(
        _record(
            tenants.org_b.pk, "req_b", at=MONTH + timedelta(days=2), model="llama", route="llama", input_tokens=10**9, cost=Decimal("99")
        )
    )
    ingest.write_batch(records)

    draft = invoices.draft(tenants.org_a, MONTH, now=AFTER)
    expected = _individually_priced(events)
    assert sorted(line.amount for line in draft.lines) == sorted(expected.values())
    assert draft.subtotal == sum(expected.values(), Decimal(0))
    assert draft.total == draft.subtotal


def test_sub_cent_prices_keep_their_precision(tenants: Tenants) -> None:
    _price_book()
    ingest.write_batch(
        [_record(tenants.org_a.pk, "one", at=MONTH + timedelta(hours=1), model="llama", route="llama", input_tokens=3, output_tokens=0)]
    )
    [line] = invoices.draft(tenants.org_a, MONTH, now=AFTER).lines
    assert line.exact_amount == Decimal("0.000000450000369")  # 3 tokens x $0.150000123 / 1M
    assert line.amount == Decimal("0.00") and line.unit_price == Decimal("0.150000123")


def test_a_price_change_mid_month_prices_each_event_at_its_version(tenants: Tenants) -> None:
    _price_book()
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk,
                "before",
                at=CHANGE - timedelta(minutes=1),
                model="llama",
                route="llama",
                input_tokens=1_000_000,
                output_tokens=0,
            ),
            _record(tenants.org_a.pk, "after", at=CHANGE, model="llama", route="llama", input_tokens=1_000_000, output_tokens=0),
        ]
    )
    lines = invoices.draft(tenants.org_a, MONTH, now=AFTER).lines
    assert sorted((line.unit_price, line.amount) for line in lines) == [
        (Decimal("0.150000123"), Decimal("0.15")),
        (Decimal("0.2"), Decimal("0.20")),
    ]


def test_an_organization_override_wins_over_the_platform_price(tenants: Tenants) -> None:
    _price_book()
    ModelPrice.objects.create(
        organization=tenants.org_a,
        model="llama",
        input_price_per_mtok=Decimal("0.01"),
        output_price_per_mtok=Decimal("0.01"),
        effective_from=MONTH,
    )
    ingest.write_batch(
        [
            _record(
                tenants.org_b.pk, "b", at=MONTH + timedelta(days=1), model="llama", route="llama", input_tokens=1_000_000, output_tokens=0
            )
        ]
    )
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk, "a", at=MONTH + timedelta(days=1), model="llama", route="llama", input_tokens=1_000_000, output_tokens=0
            )
        ]
    )
    assert [line.amount for line in invoices.draft(tenants.org_a, MONTH, now=AFTER).lines] == [Decimal("0.01")]
    assert [line.amount for line in invoices.draft(tenants.org_b, MONTH, now=AFTER).lines] == [Decimal("0.15")]


def test_gpu_seconds_are_billed_cold_start_included(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat")
    gpu = deployment.current_revision.gpu_type_id
    start = MONTH + timedelta(days=3)
    GpuPrice.objects.create(gpu_type_id=gpu, price_per_hour=Decimal("2.2"), effective_from=MONTH - timedelta(days=1))
    add_replica(
        deployment,
        [
            (P, start),
            (PROV, start + timedelta(seconds=10)),
            (LOAD, start + timedelta(seconds=40)),
            (READY, start + timedelta(seconds=100)),
            (DRAIN, start + timedelta(seconds=3610)),
            (STOP, start + timedelta(seconds=3640)),
        ],
    )
    [line] = invoices.draft(tenants.org_a, MONTH, now=AFTER).lines
    assert line.kind == "gpu" and line.unit == "GPU-hour" and line.unit_price == Decimal("2.2")
    assert (line.quantity * 3600).quantize(Decimal(1)) == Decimal(3630)  # provisioning to stopped
    assert line.exact_amount.quantize(Decimal("1E-12")) == Decimal("2.218333333333") and line.amount == Decimal("2.22")  # 3,630 s x $2.2/h
    assert invoices.draft(tenants.org_b, MONTH, now=AFTER).lines == []


def test_one_gpu_price_truth_a_fresh_install_bills_and_the_estimate_agrees_with_the_invoice(tenants: Tenants) -> None:
    """No price was ever entered: the book's list price (the GPU catalog) bills. The deploy
    estimate per hour, times the hours the replica ran, is the invoice line to the cent; a
    price version staff add later moves both, and the other tenant's deal stays its own."""
    deployment = create_deployment(tenants.org_a, name="chat", gpu_type="T4", min_replicas=1, max_replicas=2)
    start = MONTH + timedelta(days=2)
    add_replica(deployment, [(P, start), (PROV, start), (READY, start + timedelta(seconds=60)), (STOP, start + timedelta(hours=10))])
    spec = deployment_services.DeploymentSpec.of(deployment.current_revision)
    per_replica_hour, _ = deployment_services.estimated_cost_per_hour(spec, organization_id=tenants.org_a.pk)
    assert per_replica_hour == Decimal("0.526")  # T4's list price, from its cited source
    [line] = invoices.draft(tenants.org_a, MONTH, now=AFTER).lines
    assert line.amount == (per_replica_hour * 10).quantize(Decimal("0.01")) == Decimal("5.26")

    # From the next month on, a platform version; and organization B's own deal.
    GpuPrice.objects.create(gpu_type_id="T4", price_per_hour=Decimal("0.40"), effective_from=AFTER.replace(day=1, hour=0))
    GpuPrice.objects.create(organization=tenants.org_b, gpu_type_id="T4", price_per_hour=Decimal("0.30"), effective_from=MONTH)
    assert deployment_services.estimated_cost_per_hour(spec, organization_id=tenants.org_a.pk)[0] == Decimal("0.40")
    assert deployment_services.estimated_cost_per_hour(spec, organization_id=tenants.org_b.pk)[0] == Decimal("0.30")
    assert [line.amount for line in invoices.draft(tenants.org_a, MONTH, now=AFTER).lines] == [Decimal("5.26")]  # the past keeps its price

    # The Usage page shows the same GPU time and the same charge as the invoice line.
    now = start + timedelta(days=2)
    usage = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="7d"), show_cost=True, now=now)
    [line] = invoices.draft(tenants.org_a, MONTH, now=now).lines
    assert usage["totals"]["gpu_hours"] == "10.000" and Decimal(usage["totals"]["gpu_cost"]) == line.exact_amount == Decimal("5.26")
    assert "gpu_cost" not in dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="7d"), show_cost=False, now=now)["totals"]

    # A replica still running counts until now on both, not to the end of the hour.
    running = create_deployment(tenants.org_a, name="running", gpu_type="L4")
    begun = now - timedelta(minutes=97)
    add_replica(running, [(P, begun), (PROV, begun), (READY, begun + timedelta(seconds=20))])
    usage = dashboards.usage_dashboard(tenants.org_a, DashboardParams(range="24h"), show_cost=True, now=now)
    lines = invoices.draft(tenants.org_a, MONTH, now=now).lines
    running_line = next(line for line in lines if line.description.startswith("running:"))
    assert (running_line.quantity * 60).quantize(Decimal(1)) == 97  # GPU-minutes until now
    assert Decimal(usage["totals"]["gpu_cost"]) == running_line.exact_amount.quantize(Decimal("0.000001"))


def test_credits_are_drawn_down_before_charging_earliest_expiry_first(tenants: Tenants) -> None:
    _price_book()
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk,
                "big",
                at=MONTH + timedelta(days=1),
                model="llama",
                route="llama",
                input_tokens=20_000_000,
                output_tokens=0,
            )
        ]
    )  # $3.00
    late = CreditGrant.objects.create(organization=tenants.org_a, amount=Decimal("10"), reason="prepaid", granted_at=MONTH, expires_at=None)
    soon = CreditGrant.objects.create(
        organization=tenants.org_a, amount=Decimal("2"), reason="promo", granted_at=MONTH, expires_at=MONTH + timedelta(days=60)
    )
    CreditGrant.objects.create(
        organization=tenants.org_a,
        amount=Decimal("50"),
        reason="expired",
        granted_at=MONTH - timedelta(days=90),
        expires_at=MONTH - timedelta(days=1),
    )
    draft = invoices.draft(tenants.org_a, MONTH, now=AFTER)
    assert draft.subtotal == Decimal("3.00") and draft.credits_applied == Decimal("3.00") and draft.total == 0
    assert [(use.grant_id, use.amount) for use in draft.credits] == [(soon.pk, Decimal("2")), (late.pk, Decimal("1.00"))]
    invoice = invoices.close_period(tenants.org_a, MONTH, now=AFTER)
    assert invoices.remaining_credit(soon) == 0 and invoices.remaining_credit(late) == Decimal("9.00")
    assert invoices.close_period(tenants.org_a, MONTH, now=AFTER).pk == invoice.pk  # closing twice: the same invoice


def test_enterprise_minimum_and_free_plan_credit(tenants: Tenants) -> None:
    _price_book()
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk, "x", at=MONTH + timedelta(days=1), model="llama", route="llama", input_tokens=20_000_000, output_tokens=0
            )
        ]
    )  # $3.00
    BillingAccount.objects.create(organization=tenants.org_a, plan=Plan.ENTERPRISE, committed_monthly_minimum=Decimal("1000"))
    draft = invoices.draft(tenants.org_a, MONTH, now=AFTER)
    assert (draft.subtotal, draft.minimum_adjustment, draft.total) == (Decimal("3.00"), Decimal("997.00"), Decimal("1000.00"))
    BillingAccount.objects.filter(organization=tenants.org_a).update(plan=Plan.FREE)
    draft = invoices.draft(tenants.org_a, MONTH, now=AFTER)
    assert (draft.credits_applied, draft.total) == (Decimal("3.00"), Decimal("0.00"))


def test_a_closed_invoice_is_immutable_and_only_past_months_close(tenants: Tenants) -> None:
    _price_book()
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk, "x", at=MONTH + timedelta(days=1), model="llama", route="llama", input_tokens=20_000_000, output_tokens=0
            )
        ]
    )
    with pytest.raises(ValueError, match="only once it is over"):
        invoices.close_period(tenants.org_a, MONTH, now=MONTH + timedelta(days=20))
    invoice = invoices.close_period(tenants.org_a, MONTH, now=AFTER)
    assert [(line.description, line.amount) for line in invoice.lines.all()] == [("llama: input tokens", Decimal("3.00"))]
    invoice.total = Decimal("0")
    with pytest.raises(ValueError, match="immutable"):
        invoice.save()
    # Usage arriving after the close does not change the closed invoice.
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk,
                "late",
                at=MONTH + timedelta(days=2),
                model="llama",
                route="llama",
                input_tokens=20_000_000,
                output_tokens=0,
            )
        ]
    )
    assert Invoice.objects.for_org(tenants.org_a).get().total == Decimal("3.00")


def test_spend_limit_is_the_cap_or_the_free_credit(tenants: Tenants) -> None:
    assert invoices.spend_limit(tenants.org_a, now=AFTER) is None
    Quota.objects.update_or_create(organization=tenants.org_a, defaults={"monthly_spend_cap": Decimal("25")})
    assert invoices.spend_limit(tenants.org_a, now=AFTER) == invoices.SpendLimit(
        Decimal("25"), "monthly spend cap of $25.00", invoices.CAP_LIFTED_BY
    )
    BillingAccount.objects.update_or_create(organization=tenants.org_a, defaults={"plan": Plan.FREE})
    CreditGrant.objects.create(organization=tenants.org_a, amount=Decimal("3"), reason="welcome", granted_at=AFTER - timedelta(days=1))
    assert invoices.spend_limit(tenants.org_a, now=AFTER) == invoices.SpendLimit(
        Decimal("8.00"), "free plan credit of $8.00", invoices.CREDIT_LIFTED_BY
    )
    assert invoices.spend_limit(tenants.org_b, now=AFTER) is None
    assert rating.month_to_date(tenants.org_b, now=AFTER) == 0


def test_hourly_amounts_for_stripe_are_after_credits(tenants: Tenants) -> None:
    _price_book()
    first, second = MONTH + timedelta(hours=5), MONTH + timedelta(hours=6)
    ingest.write_batch(
        [
            _record(tenants.org_a.pk, "a", at=first, model="llama", route="llama", input_tokens=10_000_000, output_tokens=0),  # $1.50000123
            _record(tenants.org_a.pk, "b", at=second, model="llama", route="llama", input_tokens=10_000_000, output_tokens=0),
        ]
    )
    CreditGrant.objects.create(organization=tenants.org_a, amount=Decimal("2"), reason="prepaid", granted_at=MONTH)
    amounts = invoices.hourly_amounts_micros(tenants.org_a, MONTH + timedelta(hours=4), MONTH + timedelta(hours=7), now=AFTER)
    # The invoice: 3.00 (the line $3.00000246, rounded) - $2 of credit = $1.00; Stripe gets exactly that.
    assert amounts == {MONTH + timedelta(hours=4): 0, first: 0, second: 1_000_000}
    assert invoices.hourly_amounts_micros(tenants.org_b, first, second, now=AFTER) == {first: 0}


def test_the_committed_minimum_reaches_stripe_in_the_months_last_hour(tenants: Tenants) -> None:
    _price_book()
    BillingAccount.objects.create(organization=tenants.org_a, plan=Plan.ENTERPRISE, committed_monthly_minimum=Decimal("100"))
    at = MONTH + timedelta(hours=5)
    ingest.write_batch([_record(tenants.org_a.pk, "a", at=at, model="llama", route="llama", input_tokens=10_000_000, output_tokens=0)])
    end = rating.next_month(MONTH)
    pushed = invoices.hourly_amounts_micros(tenants.org_a, MONTH, end, now=AFTER)
    assert pushed[at] == 1_500_000 and pushed[end - timedelta(hours=1)] == 98_500_000  # $1.50 used, raised to $100 at the end
    assert sum(pushed.values()) == 100_000_000 and invoices.draft(tenants.org_a, MONTH, now=AFTER).total == Decimal("100.00")
