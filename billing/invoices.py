"""Invoices: the running preview of the current month and closed, immutable months.

A month's charges are its rated lines (billing.rating), raised to the plan's committed
minimum (enterprise); credits are then drawn down, the grants that expire first first,
and what is left is the total. The free plan carries a monthly credit of its own
(FREE_PLAN_MONTHLY_CREDIT) and its hard limit is its credit: past it, the gateway refuses.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum

from billing import rating
from billing.models import BillingAccount, CarriedAdjustment, CreditDrawdown, CreditGrant, Invoice, InvoiceLine, Plan
from deployments.models import Quota
from tenancy.models import Organization


def free_plan_monthly_credit() -> Decimal:
    return settings.FREE_PLAN_MONTHLY_CREDIT


def account_for(org: Organization) -> BillingAccount:
    """The organization's account, or the defaults if it never changed them (unsaved:
    reading never writes)."""
    return BillingAccount.objects.filter(organization=org).first() or BillingAccount(organization=org)


@dataclass
class CreditUse:
    grant_id: str  # "" for the free plan's monthly credit
    description: str
    amount: Decimal


@dataclass
class Draft:
    organization: Organization
    period_start: datetime
    period_end: datetime
    plan: str
    currency: str
    lines: list[rating.Line]
    subtotal: Decimal
    minimum_adjustment: Decimal
    credits: list[CreditUse] = field(default_factory=list)
    # Earlier months' differences with Stripe, carried here; outside credit and the
    # minimum, as Stripe adds them (pending invoice items) beside its metered line.
    adjustments: list[CarriedAdjustment] = field(default_factory=list)

    @property
    def credits_applied(self) -> Decimal:
        return sum((use.amount for use in self.credits), Decimal(0))

    @property
    def carried_adjustments(self) -> Decimal:
        return sum((adjustment.amount for adjustment in self.adjustments), Decimal(0))

    @property
    def metered_total(self) -> Decimal:
        """What the month's usage comes to: what its hours push to Stripe's meter."""
        return self.subtotal + self.minimum_adjustment - self.credits_applied

    @property
    def total(self) -> Decimal:
        return self.metered_total + self.carried_adjustments


def remaining_credit(grant: CreditGrant) -> Decimal:
    """The grant less what closed invoices drew from it and what its buyer took back
    through a refund or a dispute (never below zero: what was spent stays spent)."""
    used = grant.drawdowns.aggregate(used=Sum("amount"))["used"] or Decimal(0)
    return max(Decimal("0.00"), grant.amount - grant.withdrawn - used)


def _usable_grants(org: Organization, period_start: datetime, period_end: datetime) -> list[CreditGrant]:
    # A grant counts for a month it was granted before the end of and had not expired by
    # the start of.
    return list(
        CreditGrant.objects.for_org(org)
        .filter(granted_at__lt=period_end)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=period_start))
        .order_by(F("expires_at").asc(nulls_last=True), "granted_at", "id")
    )


def draft(org: Organization, period_start: datetime, *, now: datetime | None = None) -> Draft:
    """The invoice for the month starting at period_start, as it stands at `now`."""
    now = now or datetime.now(UTC)
    period_end = rating.next_month(period_start)
    account = account_for(org)
    lines = [line for line in rating.rate(org, period_start, period_end, now=now) if line.amount or line.exact_amount]
    subtotal = rating.subtotal(lines)
    minimum = committed_minimum(org)
    invoice = Draft(org, period_start, period_end, account.plan, account.currency, lines, subtotal, max(Decimal(0), minimum - subtotal))
    owed = invoice.subtotal + invoice.minimum_adjustment
    if account.plan == Plan.FREE and owed > 0:
        use = min(owed, free_plan_monthly_credit())
        invoice.credits.append(CreditUse("", "Free plan monthly credit", use))
        owed -= use
    for grant in _usable_grants(org, period_start, period_end):
        if owed <= 0:
            break
        use = min(owed, remaining_credit(grant))
        if use > 0:
            invoice.credits.append(CreditUse(grant.pk, f"Credit {grant.pk}: {grant.reason}", use))
            owed -= use
    invoice.adjustments = list(
        CarriedAdjustment.objects.for_org(org)
        .filter(status=CarriedAdjustment.Status.SENT, period_start=period_start)
        .order_by("sent_at", "id")
    )
    return invoice


def preview(org: Organization, *, now: datetime | None = None) -> Draft:
    now = now or datetime.now(UTC)
    return draft(org, rating.month_start(now), now=now)


def close_period(org: Organization, period_start: datetime, *, now: datetime | None = None) -> Invoice:
    """Writes the month's invoice once it is over; closing it again returns the same one."""
    now = now or datetime.now(UTC)
    if rating.next_month(period_start) > now:
        raise ValueError("A month can be closed only once it is over.")
    existing = Invoice.objects.for_org(org).filter(period_start=period_start).first()
    if existing is not None:
        return existing
    invoice_draft = draft(org, period_start, now=now)
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                organization=org,
                period_start=period_start,
                period_end=invoice_draft.period_end,
                currency=invoice_draft.currency,
                plan=invoice_draft.plan,
                subtotal=invoice_draft.subtotal,
                credits_applied=invoice_draft.credits_applied,
                minimum_adjustment=invoice_draft.minimum_adjustment,
                carried_adjustments=invoice_draft.carried_adjustments,
                total=invoice_draft.total,
                closed_at=now,
            )
            InvoiceLine.objects.bulk_create(
                InvoiceLine(
                    invoice=invoice,
                    position=position,
                    kind=line.kind,
                    description=line.description,
                    quantity=line.quantity.quantize(Decimal("0.000001")),
                    unit=line.unit,
                    unit_price=line.unit_price,
                    exact_amount=line.exact_amount,
                    amount=line.amount,
                )  # fmt: skip
                for position, line in enumerate(invoice_draft.lines)
            )
            CreditDrawdown.objects.bulk_create(
                CreditDrawdown(grant_id=use.grant_id, invoice=invoice, amount=use.amount) for use in invoice_draft.credits if use.grant_id
            )
    except IntegrityError:  # closed by another worker at the same moment
        return Invoice.objects.for_org(org).get(period_start=period_start)
    return invoice


CAP_LIFTED_BY = "platform staff can raise the cap"
CREDIT_LIFTED_BY = "platform staff can grant credit or move the organization to pay as you go"


@dataclass(frozen=True)
class SpendLimit:
    amount: Decimal
    reason: str  # says what the limit is, in the gateway's 402
    lifted_by: str = CAP_LIFTED_BY  # who can lift it: every refusal says so


def spend_limit(org: Organization, *, now: datetime | None = None) -> SpendLimit | None:
    """The most this month may cost before the gateway refuses with 402: the staff's hard
    cap, and on the free plan what its credits cover; None when unlimited."""
    now = now or datetime.now(UTC)
    limits = []
    cap = Quota.objects.filter(organization=org).values_list("monthly_spend_cap", flat=True).first()
    if cap is not None:
        limits.append(SpendLimit(cap, f"monthly spend cap of ${cap}", CAP_LIFTED_BY))
    if account_for(org).plan == Plan.FREE:
        period_start = rating.month_start(now)
        grants = sum((remaining_credit(grant) for grant in _usable_grants(org, period_start, rating.next_month(period_start))), Decimal(0))
        credit = free_plan_monthly_credit() + grants
        limits.append(SpendLimit(credit, f"free plan credit of ${credit}", CREDIT_LIFTED_BY))
    return min(limits, key=lambda limit: limit.amount) if limits else None


def credit_for_month(org: Organization, period_start: datetime) -> Decimal:
    """What credit can cover in the month: the free plan's monthly credit and what
    remains of the grants usable in it."""
    grants = sum((remaining_credit(grant) for grant in _usable_grants(org, period_start, rating.next_month(period_start))), Decimal(0))
    return grants + (free_plan_monthly_credit() if account_for(org).plan == Plan.FREE else Decimal(0))


def committed_minimum(org: Organization) -> Decimal:
    account = account_for(org)
    return account.committed_monthly_minimum if account.plan == Plan.ENTERPRISE else Decimal(0)


def _charged_after_credit(exact_lines: dict[tuple[object, ...], Decimal], credit: Decimal, minimum: Decimal = Decimal(0)) -> Decimal:
    """A running invoice's total: its lines rounded to the cent, raised to the committed
    minimum (at the month's end), less what credit covers."""
    subtotal = sum((rating.round_to_cents(amount) for amount in exact_lines.values()), Decimal(0))
    return max(Decimal(0), max(subtotal, minimum) - credit)


def hourly_amounts_micros(org: Organization, start: datetime, end: datetime, *, now: datetime | None = None) -> dict[datetime, int]:
    """What each closed hour in [start, end) adds to its month's invoice total, in
    micro-dollars: the running invoice (its lines rounded to the cent, less credit) at the
    hour's end, minus at its start. What is pushed to Stripe's meter hour by hour, so over a
    month Stripe bills exactly the invoice's total, to the cent; the running total never
    falls, so no hour is negative. An enterprise month's last hour also carries what raises
    the month to its committed minimum, so that reaches Stripe too."""
    book = rating.PriceBook.load(org)
    amounts: dict[datetime, int] = {}
    hour = start
    while hour < end:
        period = rating.month_start(hour)
        stop = min(rating.next_month(period), end)
        credit, minimum = credit_for_month(org, period), committed_minimum(org)
        month_end = rating.next_month(period)
        running: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
        if hour > period:
            for line in rating.rate(org, period, hour, now=now, book=book):
                running[line.key] += line.exact_amount

        before = _charged_after_credit(running, credit)
        while hour < stop:
            following = hour + timedelta(hours=1)
            for line in rating.rate(org, hour, following, now=now, book=book):
                running[line.key] += line.exact_amount
            after = _charged_after_credit(running, credit, minimum if following == month_end else Decimal(0))
            amounts[hour] = rating.to_micros(after - before)
            before, hour = after, following
    return amounts
