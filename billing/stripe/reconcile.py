"""Reconciliation with Stripe: what Stripe's meter actually holds, read back from its meter
event summaries, against what rating says each hour is worth.

The hourly push (billing.stripe.sync) writes what it believes it sent; this job checks
Stripe itself, so it also catches what the ledger cannot see: an hour changed after the
push's 48-hour lookback (late usage, a price version inserted on an earlier hour), an
event Stripe lost or never aggregated, an event someone else sent.

- **The open month** (from the subscription's first hour; during Stripe's one-hour
  finalization grace after a month ends, that month too): every closed hour whose summary
  differs from its rated amount gets a correction, the next revision of the hour (a later
  timestamp inside the hour, which the hourly pre-aggregated meter keeps instead of the
  earlier events). Hours with a push still pending, or sent less than SUMMARY_SETTLE ago
  (summaries are eventually consistent), wait for a later run.
- **Months whose Stripe invoice is final**: the month's difference (rated minus what the
  meter billed, less what was already carried) becomes a CarriedAdjustment, sent to
  Stripe as a pending invoice item (so it lands on the customer's next invoice) and shown
  as a line of the invoice of the month it was sent in.

Every step is idempotent: a run repeated, interrupted by an outage or racing another
changes nothing twice (identifiers per hour and revision, an idempotency key per
adjustment, adjustments computed net of those already carried, under a row lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone

from billing import invoices, rating
from billing.models import CarriedAdjustment
from billing.stripe import sync
from billing.stripe.models import MeterPush, MeterPushStatus, StripeAccount
from tenancy.models import Organization

logger = logging.getLogger(__name__)

MICROS = Decimal(1_000_000)
# Stripe aggregates meter events asynchronously: a summary may miss an event for a while.
SUMMARY_SETTLE = timedelta(minutes=10)
# A month is carried once its Stripe invoice is final and its last pushes have settled.
CARRY_AFTER = sync.FINALIZATION_GRACE + timedelta(minutes=30)
# How far back closed months are still compared.
HISTORY_MONTHS = 12


@dataclass
class ReconcileReport:
    """What one run found and did, for one organization."""

    open_from: datetime
    hours_checked: int = 0
    rated_micros: int = 0  # the open month's checked hours, as rated
    stripe_micros: int = 0  # the same hours, as Stripe's meter holds them
    corrections: list[str] = field(default_factory=list)  # identifiers sent (or already there)
    unsettled: list[datetime] = field(default_factory=list)  # differing hours left to a later run
    uncorrectable: list[datetime] = field(default_factory=list)  # out of revisions: carried once final
    carried: list[str] = field(default_factory=list)  # CarriedAdjustment ids created this run
    adjustments_sent: list[str] = field(default_factory=list)
    stopped: str = ""  # why the run stopped early (Stripe unreachable), if it did


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def stripe_hourly_values(
    client: stripe.StripeClient, meter_id: str, customer_id: str, start: datetime, end: datetime
) -> dict[datetime, int]:
    """Stripe's meter, hour by hour, over [start, end) (whole hours)."""
    summaries = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer_id, "start_time": _ts(start), "end_time": _ts(end), "value_grouping_window": "hour", "limit": 100}
    )
    return {
        datetime.fromtimestamp(summary.start_time, tz=UTC): round(summary.aggregated_value)
        for summary in summaries.auto_paging_iter()
        if summary.aggregated_value
    }


def stripe_total(client: stripe.StripeClient, meter_id: str, customer_id: str, start: datetime, end: datetime) -> int:
    """What Stripe's meter holds over [start, end), in micro-dollars."""
    summaries = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer_id, "start_time": _ts(start), "end_time": _ts(end), "limit": 100}
    )
    return sum(round(summary.aggregated_value) for summary in summaries.auto_paging_iter())


def _plan_correction(org: Organization, hour: datetime, target: int, now: datetime, report: ReconcileReport) -> MeterPush | None:
    """The revision that sets the hour to `target` on Stripe, written (pending) before it is
    sent; None when the hour must wait or cannot be corrected."""
    rows = MeterPush.objects.for_org(org).filter(meter=sync.METER_EVENT_NAME, hour=hour)
    if rows.filter(status=MeterPushStatus.PENDING).exists() or rows.filter(sent_at__gt=now - SUMMARY_SETTLE).exists():
        report.unsettled.append(hour)
        return None
    latest = rows.aggregate(revision=Max("revision"))["revision"]
    revision = 0 if latest is None else latest + 1
    timestamp = hour + timedelta(minutes=59, seconds=revision)
    if revision > sync.MAX_REVISION or timestamp < now - sync.STRIPE_PAST_WINDOW + sync.WINDOW_MARGIN:
        report.uncorrectable.append(hour)
        logger.warning("hour %s of %s cannot be corrected on Stripe (revision %s); carried once its month is final", hour, org.pk, revision)
        return None
    push, _ = MeterPush.objects.for_org(org).get_or_create(
        identifier=sync.meter_identifier(org, hour, revision),
        defaults={
            "organization": org,
            "meter": sync.METER_EVENT_NAME,
            "hour": hour,
            "revision": revision,
            "value": target,
            "timestamp": timestamp,
            "last_error": "reconciliation: Stripe's meter differed from the rated hour",
        },
    )
    return push if push.status == MeterPushStatus.PENDING else None


def _reconcile_open_month(
    client: stripe.StripeClient,
    account: StripeAccount,
    meter_id: str,
    first_hour: datetime,
    now: datetime,
    hourly_amounts: sync.HourlyAmounts,
    report: ReconcileReport,
) -> None:
    org = account.organization
    start, end = max(report.open_from, first_hour), sync.last_closed_hour_end(now)
    if start >= end:
        return
    targets = sync.stripe_targets(org, start, end, first_hour, hourly_amounts)
    held = stripe_hourly_values(client, meter_id, account.customer_id, start, end)
    report.hours_checked = int((end - start) / timedelta(hours=1))
    report.rated_micros, report.stripe_micros = sum(targets.values()), sum(held.values())
    pushes = []
    for hour in sorted(set(targets) | set(held)):
        target = targets.get(hour, 0)
        if held.get(hour, 0) == target:
            continue
        push = _plan_correction(org, hour, target, now, report)
        if push is not None:
            pushes.append(push)
    # Corrections an earlier run could not send go first, with their own identifiers.
    retried = MeterPush.objects.for_org(org).filter(status=MeterPushStatus.PENDING, hour__gte=start).exclude(pk__in=[p.pk for p in pushes])
    sent = sync.PushReport()
    for push in sorted([*retried, *pushes], key=lambda row: (row.hour, row.revision)):
        if not sync.send_push(client, account, push, sent, now):
            report.stopped = sent.stopped
            break
    report.corrections = sent.sent + sent.already_sent


def _carry_final_months(
    client: stripe.StripeClient, account: StripeAccount, meter_id: str, first_hour: datetime, now: datetime, report: ReconcileReport
) -> None:
    """A CarriedAdjustment for each final month whose meter total differs from its rating."""
    org = account.organization
    month = max(rating.month_start(first_hour), rating.month_start(now - timedelta(days=31 * HISTORY_MONTHS)))
    while rating.next_month(month) + CARRY_AFTER <= now:
        following = rating.next_month(month)
        rated = rating.to_micros(invoices.draft(org, month, now=now).metered_total)
        held = stripe_total(client, meter_id, account.customer_id, max(month, first_hour), following)
        with transaction.atomic():
            # One run at a time per organization decides what is still to carry.
            StripeAccount.objects.for_org(org).select_for_update().get(pk=account.pk)
            carried = CarriedAdjustment.objects.for_org(org).filter(source_period_start=month).aggregate(total=Sum("amount"))["total"]
            difference = rating.round_to_cents((Decimal(rated) - Decimal(held)) / MICROS) - (carried or Decimal(0))
            if difference:
                adjustment = CarriedAdjustment.objects.create(
                    organization=org,
                    source_period_start=month,
                    rated_micros=rated,
                    stripe_micros=held,
                    amount=difference,
                    description=f"Adjustment for {month:%B %Y}: usage rated after Stripe's invoice for that month was final",
                )
                report.carried.append(adjustment.pk)
                logger.warning("carrying %s for %s of %s onto the next invoice", difference, f"{month:%Y-%m}", org.pk)
        month = following


def _send_adjustments(client: stripe.StripeClient, account: StripeAccount, now: datetime, report: ReconcileReport) -> None:
    """Sends pending adjustments as pending invoice items; each lands on the invoice of the
    month it is sent in, Stripe's and ours."""
    org = account.organization
    pending = CarriedAdjustment.objects.for_org(org).filter(status=CarriedAdjustment.Status.PENDING).order_by("created_at", "id")
    for adjustment in pending:
        rows = CarriedAdjustment.objects.for_org(org).filter(pk=adjustment.pk)
        try:
            item = client.v1.invoice_items.create(
                {
                    "customer": account.customer_id,
                    "amount": int(adjustment.amount * 100),
                    "currency": sync.CURRENCY,
                    "description": adjustment.description,
                    "metadata": {"organization_id": org.pk, "switchboard_adjustment": adjustment.pk},
                },
                {"idempotency_key": f"switchboard-adjustment-{adjustment.pk}"},
            )
        except stripe.StripeError as error:
            rows.update(attempts=adjustment.attempts + 1, last_error=f"{type(error).__name__}: {error}"[:500])
            logger.warning("adjustment %s not sent (%s); retried on the next run", adjustment.pk, error)
            report.stopped = report.stopped or f"{type(error).__name__}: {error}"
            return
        rows.update(
            status=CarriedAdjustment.Status.SENT,
            stripe_invoice_item_id=item.id,
            period_start=rating.month_start(now),
            sent_at=now,
            attempts=adjustment.attempts + 1,
            last_error="",
        )
        report.adjustments_sent.append(adjustment.pk)


def reconcile_organization(
    org_id: str, *, now: datetime | None = None, hourly_amounts: sync.HourlyAmounts | None = None
) -> ReconcileReport | None:
    """One organization's reconciliation; None when Stripe is off or it has no subscription."""
    client = sync.stripe_client()
    org = Organization.objects.filter(pk=org_id).first()
    account = sync.stripe_account(org) if org is not None else None
    if client is None or org is None or account is None or not account.subscription_id:
        return None
    first_hour = sync.subscribed_hour(account)
    catalog = sync.ensure_meters_and_prices()
    if first_hour is None or catalog is None:
        return None
    now = now or timezone.now()
    report = ReconcileReport(open_from=sync.stripe_open_from(now))
    try:
        _reconcile_open_month(client, account, catalog.meter_id, first_hour, now, hourly_amounts or invoices.hourly_amounts_micros, report)
        _carry_final_months(client, account, catalog.meter_id, first_hour, now, report)
    except stripe.StripeError as error:  # summaries unreadable: nothing decided, next run again
        report.stopped = f"{type(error).__name__}: {error}"
        logger.warning("reconciliation of %s stopped: %s", org.pk, error)
    _send_adjustments(client, account, now, report)
    return report
