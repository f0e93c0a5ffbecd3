"""Stripe, through the official library's `StripeClient`: a customer per organization, a
payment method through Checkout (setup mode) and the Customer Portal, prepaid credit
through Checkout (payment mode; what is bought and granted is billing.stripe.credit's), a
subscription with one metered price on a Billing Meter, hourly meter events, and the
webhooks: Checkout's, and the invoice ones that move an organization between active, past
due and suspended.

Design (README, "Stripe"):

- The platform rates usage itself, exactly (billing.rating). Stripe receives money, not
  quantities: one meter, `switchboard_usage`, whose value is the hour's rated amount in
  micro-dollars (1 unit = $0.000001), summed over the billing period, on a metered USD
  price of 0.0001 cents per unit. So Stripe's invoice line is the platform's amount and
  the price book, overrides and versions stay in one place.
- The meter is pre-aggregated per hour (`event_time_window="hour"`): per customer and
  hour Stripe keeps only the newest event. Each (organization, hour) is pushed once the
  hour has closed (plus a grace for the ingester), with the deterministic identifier
  `<org>:switchboard_usage:<YYYYmmddTHH>`; a retry or a second run sends the same
  identifier, which Stripe refuses as a duplicate (counted here as sent). If rating later
  says the hour is worth something else (late usage, a corrected price), a revision
  `...:r<n>` with a later timestamp inside the same hour replaces the hour's value rather
  than adding to it. Anything after the last revision, outside Stripe's window or in a
  month whose Stripe invoice is final is left to the reconciliation (billing.stripe.reconcile),
  which compares Stripe's own meter summaries with the rated hours of the whole open month
  and carries older differences onto the next invoice.
- Every push is written to the ledger (`MeterPush`, pending) before it is sent and
  marked sent after, so an outage delays pushes and loses none.

With SWITCHBOARD_STRIPE_SECRET_KEY empty every function here is a no-op returning None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

import stripe
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing import accounts, rating
from billing.invoices import hourly_amounts_micros
from billing.stripe import credit
from billing.stripe.models import MeterPush, MeterPushStatus, StripeAccount, StripeCatalog, StripeWebhookEvent
from billing.stripe.settings import stripe_settings
from tenancy.models import Membership, Organization, OrgStatus, Role

logger = logging.getLogger(__name__)

METER_EVENT_NAME = "switchboard_usage"
METER_DISPLAY_NAME = "Switchboard usage (micro-dollars)"
PRODUCT_NAME = "Switchboard usage"
PRICE_LOOKUP_KEY = "switchboard_usage_microdollar"
CURRENCY = "usd"
# One meter unit is one micro-dollar: 0.0001 cents.
UNIT_AMOUNT_CENTS = Decimal("0.0001")

# Stripe accepts meter events timestamped within the past 35 calendar days and up to 5
# minutes in the future. The margin keeps a request from racing the boundary.
STRIPE_PAST_WINDOW = timedelta(days=35)
WINDOW_MARGIN = timedelta(minutes=10)
# An hour is pushed once it is over and the ingester (which writes within about a second)
# and the rollups have caught up.
PUSH_GRACE = timedelta(minutes=5)
# The periodic push re-rates this many closed hours each run, for late usage; the hourly
# reconciliation (billing.stripe.reconcile) covers the whole open month.
LOOKBACK = timedelta(hours=48)
# Stripe leaves a period's invoice open to usage for an hour after the period ends (its
# default finalization grace); this margin keeps a push from racing the finalization.
FINALIZATION_GRACE = timedelta(hours=1)
FINALIZATION_MARGIN = timedelta(minutes=15)
# A revision's timestamp is hh:59:00 + revision seconds, so revisions stay inside the hour.
MAX_REVISION = 59


HourlyAmounts = Callable[[Organization, datetime, datetime], Mapping[datetime, int]]


class StripeNotConfigured(RuntimeError):
    """The Stripe account holds objects that do not fit Switchboard's billing."""


# --------------------------------------------------------------------------- the client


@lru_cache(maxsize=4)
def _client(secret_key: str, api_base: str | None, max_network_retries: int) -> stripe.StripeClient:
    if api_base:
        return stripe.StripeClient(secret_key, base_addresses={"api": api_base}, max_network_retries=max_network_retries)
    return stripe.StripeClient(secret_key, max_network_retries=max_network_retries)


def stripe_client() -> stripe.StripeClient | None:
    """The client, or None when Stripe is off (no secret key)."""
    config = stripe_settings()
    if not config.enabled:
        return None
    return _client(config.secret_key, config.api_base, config.max_network_retries)


def stripe_enabled() -> bool:
    return stripe_settings().enabled


def _id_of(value: object) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the object."""
    if value is None or isinstance(value, str):
        return value
    return cast(str | None, getattr(value, "id", None))


# ------------------------------------------------------------------ customers and pages


def _owner_email(org: Organization) -> str | None:
    owner = Membership.objects.for_org(org).filter(role=Role.OWNER).select_related("user").order_by("created_at").first()
    return owner.user.email if owner else None


def stripe_account(org: Organization) -> StripeAccount | None:
    return StripeAccount.objects.for_org(org).first()


def ensure_customer(org: Organization) -> StripeAccount | None:
    """The organization's Stripe customer, created once. The idempotency key is derived
    from the organization, so two concurrent first calls get the same customer."""
    client = stripe_client()
    if client is None:
        return None
    existing = stripe_account(org)
    if existing is not None:
        return existing
    params: stripe.params.CustomerCreateParams = {"name": org.name, "metadata": {"organization_id": org.pk, "organization_slug": org.slug}}
    email = _owner_email(org)
    if email:
        params["email"] = email
    customer = client.v1.customers.create(params, {"idempotency_key": f"switchboard-customer-{org.pk}"})
    try:
        with transaction.atomic():
            return StripeAccount.objects.create(organization=org, customer_id=customer.id)
    except IntegrityError:
        # Another request stored the same customer first.
        return StripeAccount.objects.for_org(org).get()


def checkout_setup_url(org: Organization, success_url: str, cancel_url: str) -> str | None:
    """A Checkout page in setup mode where an owner saves a payment method."""
    client = stripe_client()
    account = ensure_customer(org)
    if client is None or account is None:
        return None
    session = client.v1.checkout.sessions.create(
        {
            "mode": "setup",
            "customer": account.customer_id,
            "currency": CURRENCY,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": {"organization_id": org.pk},
        }
    )
    if not session.url:
        raise stripe.APIError("Stripe returned a Checkout session without a URL.")
    return session.url


def checkout_credit_url(*, org: Organization, amount: Decimal, success_url: str, cancel_url: str) -> str | None:
    """A Checkout page in payment mode where an owner buys `amount` dollars of prepaid
    credit (billing.stripe.credit): granted when Stripe reports the session paid."""
    amount = credit.credit_amount(amount)
    client = stripe_client()
    if client is None:
        return None
    try:
        account = ensure_customer(org)
        if account is None:
            return None
        session = client.v1.checkout.sessions.create(
            credit.session_params(org=org, customer_id=account.customer_id, amount=amount, success_url=success_url, cancel_url=cancel_url)
        )
    except stripe.StripeError as error:
        logger.warning("credit Checkout for %s could not be created: %s", org.pk, error)
        raise credit.PaymentsUnavailable(credit.UNAVAILABLE) from error
    if not session.url:
        raise credit.PaymentsUnavailable(f"Stripe returned a Checkout session without a URL. {credit.UNAVAILABLE}")
    return session.url


def portal_url(org: Organization, return_url: str) -> str | None:
    """A Customer Portal session: payment methods, invoices, billing details."""
    client = stripe_client()
    account = ensure_customer(org)
    if client is None or account is None:
        return None
    session = client.v1.billing_portal.sessions.create({"customer": account.customer_id, "return_url": return_url})
    return session.url


# --------------------------------------------------------------- meter, price, subscription


def _find_meter(client: stripe.StripeClient) -> stripe.billing.Meter | None:
    for meter in client.v1.billing.meters.list({"status": "active", "limit": 100}).auto_paging_iter():
        if meter.event_name == METER_EVENT_NAME:
            return meter
    return None


def ensure_meters_and_prices() -> StripeCatalog | None:
    """The usage meter, its product and its metered price, found or created once per
    Stripe account (looked up by event name and price lookup key before creating, so a
    lost database row does not make a second meter)."""
    client = stripe_client()
    if client is None:
        return None
    catalog = StripeCatalog.objects.filter(event_name=METER_EVENT_NAME).first()
    if catalog is not None:
        return catalog
    meter = _find_meter(client)
    if meter is not None and (meter.event_time_window != "hour" or meter.default_aggregation.formula != "sum"):
        # Revisions replace an hour only on an hourly pre-aggregated sum; on any other
        # meter they would add up and bill twice.
        raise StripeNotConfigured(
            f"The Stripe meter {meter.id} for `{METER_EVENT_NAME}` is not an hourly pre-aggregated sum; "
            "deactivate it and let Switchboard create its own."
        )
    if meter is None:
        meter = client.v1.billing.meters.create(
            {
                "display_name": METER_DISPLAY_NAME,
                "event_name": METER_EVENT_NAME,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                "value_settings": {"event_payload_key": "value"},
                "event_time_window": "hour",
            },
            {"idempotency_key": f"switchboard-meter-{METER_EVENT_NAME}"},
        )
    prices = client.v1.prices.list({"lookup_keys": [PRICE_LOOKUP_KEY], "active": True, "limit": 1}).data
    if prices:
        price = prices[0]
        product_id = _id_of(price.product) or ""
        if price.recurring is None or price.recurring.meter != meter.id:
            raise StripeNotConfigured(f"The Stripe price `{PRICE_LOOKUP_KEY}` ({price.id}) is not metered on meter {meter.id}.")
    else:
        product = client.v1.products.create(
            {"name": PRODUCT_NAME, "metadata": {"switchboard_meter": METER_EVENT_NAME}},
            {"idempotency_key": f"switchboard-product-{METER_EVENT_NAME}"},
        )
        product_id = product.id
        price = client.v1.prices.create(
            {
                "currency": CURRENCY,
                "product": product_id,
                "unit_amount_decimal": UNIT_AMOUNT_CENTS,
                "billing_scheme": "per_unit",
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
                "lookup_key": PRICE_LOOKUP_KEY,
                "nickname": "Usage, per micro-dollar",
            },
            {"idempotency_key": f"switchboard-price-{METER_EVENT_NAME}-{meter.id}"},
        )
    catalog, _ = StripeCatalog.objects.get_or_create(
        event_name=METER_EVENT_NAME, defaults={"meter_id": meter.id, "product_id": product_id, "price_id": price.id}
    )
    return catalog


def ensure_subscription(org: Organization) -> StripeAccount | None:
    """A monthly subscription for the organization's customer with the metered price."""
    client = stripe_client()
    catalog = ensure_meters_and_prices()
    account = ensure_customer(org)
    if client is None or catalog is None or account is None:
        return None
    if account.subscription_id:
        return account
    # Stripe's periods are the platform's invoice months (calendar months, UTC), so each
    # Stripe invoice bills exactly one of ours.
    anchor = int(rating.next_month(rating.month_start(timezone.now())).timestamp())
    subscription = client.v1.subscriptions.create(
        {
            "customer": account.customer_id,
            "items": [{"price": catalog.price_id}],
            "billing_cycle_anchor": anchor,
            "proration_behavior": "none",
            "metadata": {"organization_id": org.pk},
        },
        {"idempotency_key": f"switchboard-subscription-{org.pk}-{catalog.price_id}-{anchor}"},
    )
    StripeAccount.objects.for_org(org).filter(subscription_id="").update(subscription_id=subscription.id, subscribed_at=timezone.now())
    account.refresh_from_db()
    return account


# ---------------------------------------------------------------------- meter events


@dataclass
class PushReport:
    """What one push_usage run did, by identifier."""

    sent: list[str] = field(default_factory=list)
    already_sent: list[str] = field(default_factory=list)  # Stripe answered "duplicate identifier"
    pending: list[str] = field(default_factory=list)  # failed this run; retried next run
    expired: list[str] = field(default_factory=list)
    not_closed: list[datetime] = field(default_factory=list)
    unpushable: list[datetime] = field(default_factory=list)  # changed after the last revision
    stopped: str = ""  # why the run stopped early (an outage), if it did


def meter_identifier(org: Organization, hour: datetime, revision: int = 0) -> str:
    base = f"{org.pk}:{METER_EVENT_NAME}:{hour:%Y%m%dT%H}"
    return base if revision == 0 else f"{base}:r{revision}"


def _utc_hour(hour: datetime) -> datetime:
    if hour.tzinfo is None:
        raise ValueError(f"Hours must be timezone-aware (UTC), got {hour!r}.")
    utc = hour.astimezone(UTC)
    if (utc.minute, utc.second, utc.microsecond) != (0, 0, 0):
        raise ValueError(f"{hour.isoformat()} is not the start of an hour.")
    return utc


def _event_timestamp(hour: datetime, revision: int) -> datetime:
    return hour + timedelta(minutes=59, seconds=revision)


def _outside_window(timestamp: datetime, now: datetime) -> bool:
    return timestamp < now - STRIPE_PAST_WINDOW + WINDOW_MARGIN


def stripe_open_from(now: datetime) -> datetime:
    """The first hour whose month Stripe still bills: the current month, or during the
    finalization grace after a month ends, the month that just ended. Usage of earlier
    hours can only be carried onto a later invoice (billing.stripe.reconcile)."""
    current = rating.month_start(now)
    if now < current + FINALIZATION_GRACE - FINALIZATION_MARGIN:
        return rating.month_start(current - timedelta(hours=1))
    return current


def last_closed_hour_end(now: datetime) -> datetime:
    """The end of the newest hour that may be pushed: over, plus PUSH_GRACE."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return end - timedelta(hours=1) if end + PUSH_GRACE > now else end


def subscribed_hour(account: StripeAccount) -> datetime | None:
    if account.subscribed_at is None:
        return None
    return account.subscribed_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def stripe_targets(
    org: Organization, start: datetime, end: datetime, first_hour: datetime, hourly_amounts: HourlyAmounts
) -> dict[datetime, int]:
    """What each hour in [start, end) from `first_hour` (the subscription's first) on should
    hold on Stripe's meter. The month's usage before the subscription began is folded into
    its first hour, so Stripe bills the month's whole invoice."""
    start = max(start, first_hour)
    if start >= end:
        return {}
    rate_from = rating.month_start(first_hour) if start == first_hour else start
    amounts = dict(hourly_amounts(org, rate_from, end))
    before = sum(amount for hour, amount in amounts.items() if hour < first_hour)
    targets = {hour: amount for hour, amount in amounts.items() if hour >= first_hour}
    if before:
        targets[first_hour] = targets.get(first_hour, 0) + before
    return targets


def _is_duplicate_identifier(error: stripe.InvalidRequestError) -> bool:
    message = (error.user_message or "").lower()
    return error.param == "identifier" or ("identifier" in message and "already exists" in message)


def _row(push: MeterPush) -> QuerySet[MeterPush]:
    return MeterPush.objects.filter(organization_id=push.organization_id, pk=push.pk)


def send_push(client: stripe.StripeClient, account: StripeAccount, push: MeterPush, report: PushReport, now: datetime) -> bool:
    """Send one pending push. False when the run should stop (Stripe unreachable)."""
    if _outside_window(push.timestamp, now) or push.hour < stripe_open_from(now):
        reason = (
            "older than Stripe's 35-day window"
            if _outside_window(push.timestamp, now)
            else "its month's Stripe invoice is final; carried onto the next invoice by reconciliation"
        )
        _row(push).filter(status=MeterPushStatus.PENDING).update(status=MeterPushStatus.EXPIRED, last_error=reason)
        logger.warning("meter push %s expired before it could be sent (%s micro-dollars): %s", push.identifier, push.value, reason)
        report.expired.append(push.identifier)
        return True
    params: stripe.params.billing.MeterEventCreateParams = {
        "event_name": push.meter,
        "identifier": push.identifier,
        "timestamp": int(push.timestamp.timestamp()),
        "payload": {"stripe_customer_id": account.customer_id, "value": str(push.value)},
    }
    attempts = push.attempts + 1
    try:
        client.v1.billing.meter_events.create(params)
    except stripe.InvalidRequestError as error:
        if _is_duplicate_identifier(error):
            # Stripe already holds this identifier: an earlier attempt reached it and its
            # answer was lost. That is delivery.
            _row(push).update(status=MeterPushStatus.SENT, sent_at=now, attempts=attempts, last_error="")
            report.already_sent.append(push.identifier)
            return True
        if error.param == "timestamp":
            _row(push).update(status=MeterPushStatus.EXPIRED, attempts=attempts, last_error=str(error)[:500])
            logger.warning("meter push %s refused for its timestamp: %s", push.identifier, error)
            report.expired.append(push.identifier)
            return True
        _row(push).update(attempts=attempts, last_error=str(error)[:500])
        logger.error("meter push %s refused by Stripe, kept pending: %s", push.identifier, error)
        report.pending.append(push.identifier)
        return True
    except stripe.StripeError as error:
        # Unreachable, 5xx, rate limited or a key problem: keep it pending, stop this run
        # for the organization, and send the same identifier next time.
        _row(push).update(attempts=attempts, last_error=f"{type(error).__name__}: {error}"[:500])
        logger.warning("meter push %s not sent (%s); retried on the next run", push.identifier, error)
        report.pending.append(push.identifier)
        report.stopped = f"{type(error).__name__}: {error}"
        return False
    _row(push).update(status=MeterPushStatus.SENT, sent_at=now, attempts=attempts, last_error="")
    report.sent.append(push.identifier)
    return True


def _plan_hour(
    org: Organization, hour: datetime, amount: int, latest: MeterPush | None, now: datetime, report: PushReport
) -> MeterPush | None:
    """The ledger row to send for an hour worth `amount`, written before anything is sent;
    None when nothing needs sending."""
    if latest is None:
        revision = 0
        if amount == 0:
            return None
    elif latest.status == MeterPushStatus.PENDING:
        # Retried as written: an identifier always carries the value it was first sent with.
        if amount != latest.value and latest.latest_rated_value != amount:
            _row(latest).update(latest_rated_value=amount)
        return latest
    elif latest.status == MeterPushStatus.EXPIRED or amount == latest.value:
        return None
    else:
        revision = latest.revision + 1
    timestamp = _event_timestamp(hour, revision)
    if revision > MAX_REVISION or _outside_window(timestamp, now):
        if latest is not None and latest.latest_rated_value != amount:
            _row(latest).update(latest_rated_value=amount)
            logger.warning("hour %s of %s changed to %s micro-dollars after its last push; left to reconciliation", hour, org.pk, amount)
        if latest is None:
            MeterPush.objects.for_org(org).get_or_create(
                identifier=meter_identifier(org, hour, 0),
                defaults={
                    "organization": org,
                    "meter": METER_EVENT_NAME,
                    "hour": hour,
                    "revision": 0,
                    "value": amount,
                    "timestamp": timestamp,
                    "status": MeterPushStatus.EXPIRED,
                    "last_error": "older than Stripe's 35-day window; left to invoice reconciliation",
                },
            )
            logger.warning("usage of %s for %s (%s micro-dollars) is older than Stripe's window; not pushed", org.pk, hour, amount)
            report.expired.append(meter_identifier(org, hour, 0))
        else:
            report.unpushable.append(hour)
        return None
    push, _ = MeterPush.objects.for_org(org).get_or_create(
        identifier=meter_identifier(org, hour, revision),
        defaults={
            "organization": org,
            "meter": METER_EVENT_NAME,
            "hour": hour,
            "revision": revision,
            "value": amount,
            "timestamp": timestamp,
        },
    )
    return push if push.status == MeterPushStatus.PENDING else None


def push_usage(org: Organization, hourly_amounts: Mapping[datetime, int], now: datetime | None = None) -> PushReport | None:
    """Push the organization's closed hours to its meter: `hourly_amounts` maps the start
    of each UTC hour to its rated amount in micro-dollars. Pending pushes from earlier
    runs are retried first, with their own identifiers and values. Hours not over yet
    (plus PUSH_GRACE) are skipped until a later run; hours outside Stripe's 35-day window
    are recorded as expired; zero hours are not pushed. Returns None when Stripe is off
    or the organization has no customer."""
    client = stripe_client()
    if client is None:
        return None
    account = stripe_account(org)
    if account is None:
        return None
    now = now or timezone.now()
    report = PushReport()
    amounts: dict[datetime, int] = {}
    for hour, amount in hourly_amounts.items():
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ValueError(f"Hourly amounts are whole, non-negative micro-dollars; got {amount!r} for {hour}.")
        amounts[_utc_hour(hour)] = amount

    ledger = MeterPush.objects.for_org(org).filter(meter=METER_EVENT_NAME)
    latest: dict[datetime, MeterPush] = {}
    for row in ledger.filter(hour__in=list(amounts)) if amounts else []:
        if row.hour not in latest or row.revision > latest[row.hour].revision:
            latest[row.hour] = row
    to_send: dict[int, MeterPush] = {row.pk: row for row in ledger.filter(status=MeterPushStatus.PENDING)}
    for hour in sorted(amounts):
        if hour + timedelta(hours=1) + PUSH_GRACE > now:
            report.not_closed.append(hour)
            continue
        push = _plan_hour(org, hour, amounts[hour], latest.get(hour), now, report)
        if push is not None:
            to_send[push.pk] = push
    ordered = sorted(to_send.values(), key=lambda row: (row.hour, row.revision))
    for index, push in enumerate(ordered):
        if not send_push(client, account, push, report, now):
            report.pending.extend(row.identifier for row in ordered[index + 1 :])
            break
    return report


def organizations_to_push() -> list[str]:
    """Ids of organizations with a Stripe subscription."""
    if not stripe_enabled():
        return []
    return list(StripeAccount.objects.unscoped_across_tenants().exclude(subscription_id="").values_list("organization_id", flat=True))


def _rating_hourly_amounts() -> HourlyAmounts:
    return hourly_amounts_micros


def push_organization(org_id: str, now: datetime | None = None, hourly_amounts: HourlyAmounts | None = None) -> PushReport | None:
    """The periodic push for one organization: re-rates the closed hours of the last
    LOOKBACK that Stripe still bills (from its subscription's start) and pushes what
    changed, after retrying whatever is pending."""
    if not stripe_enabled():
        return None
    org = Organization.objects.filter(pk=org_id).first()
    account = stripe_account(org) if org is not None else None
    if org is None or account is None or not account.subscription_id:
        return None
    now = now or timezone.now()
    end = last_closed_hour_end(now)  # the hour that just closed waits for its grace
    start = max(end - LOOKBACK, stripe_open_from(now))
    first_hour = subscribed_hour(account) or start
    amounts = stripe_targets(org, start, end, first_hour, hourly_amounts or _rating_hourly_amounts())
    return push_usage(org, amounts, now)


# ---------------------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class WebhookResult:
    status: int
    message: str
    outcome: str = ""


def _set_status(org: Organization, status: str, reason: str) -> None:
    org.status = status
    org.status_reason = reason[:300]
    org.save(update_fields=["status", "status_reason"])


def _invoice_label(invoice: Mapping[str, Any]) -> str:
    return str(invoice.get("number") or invoice.get("id") or "an invoice")


def _apply_invoice_event(event: stripe.Event, created: datetime) -> str:
    invoice = event.data.object.to_dict()
    customer_id = _id_of(invoice.get("customer"))
    account = (
        StripeAccount.objects.unscoped_across_tenants()
        .select_for_update()
        .select_related("organization")
        .filter(customer_id=customer_id)
        .first()
    )
    if account is None:
        return "ignored"
    paid = event.type == "invoice.paid"
    last = account.billing_event_at
    # Order-independent: an event older than the last one applied changes nothing. At the
    # same second a payment that succeeded wins over one that failed.
    if last is not None and (created < last or (created == last and not paid)):
        return "stale"
    org = account.organization
    account.billing_event_at = created
    account.billing_event_id = event.id
    if paid:
        if org.status == OrgStatus.PAST_DUE or (org.status == OrgStatus.SUSPENDED and account.suspended_by_billing):
            _set_status(org, OrgStatus.ACTIVE, "")
        account.grace_until = None
        account.suspended_by_billing = False
    elif org.status == OrgStatus.ACTIVE:
        grace_until = created + timedelta(days=stripe_settings().past_due_grace_days)
        account.grace_until = grace_until
        _set_status(
            org,
            OrgStatus.PAST_DUE,
            f"Payment failed for invoice {_invoice_label(invoice)}. "
            f"Update the payment method by {grace_until:%Y-%m-%d %H:%M} UTC to avoid suspension.",
        )
    # Already past due: the grace runs from the first failure (Stripe retries a payment
    # several times, and each failure must not extend it). Suspended: stays suspended.
    account.save(update_fields=["billing_event_at", "billing_event_id", "grace_until", "suspended_by_billing"])
    return "applied"


def _apply_credit_payment(event: stripe.Event) -> str:
    """A prepaid-credit Checkout was paid (at completion, or later for a delayed payment
    method): one grant for the organization whose customer paid (billing.stripe.credit).
    Nothing else changes: no payment method is saved by buying credit."""
    session = event.data.object.to_dict()
    if not credit.is_credit_session(session):
        return "ignored"
    customer_id = _id_of(session.get("customer"))
    account = (
        StripeAccount.objects.unscoped_across_tenants().select_related("organization").filter(customer_id=customer_id).first()
        if customer_id
        else None
    )
    if account is None:
        logger.error("credit session %s paid by an unknown customer %r: not granted", session.get("id"), customer_id)
        return "ignored"
    return credit.grant_for_paid_session(org=account.organization, session=session)


def _apply_checkout_completed(event: stripe.Event) -> str:
    """A setup-mode Checkout finished: make its payment method the customer's default for
    invoices, then make sure the organization has its subscription. A prepaid-credit one
    is granted if it is paid already."""
    session = event.data.object.to_dict()
    if session.get("mode") == "payment":
        return _apply_credit_payment(event)
    if session.get("mode") != "setup":
        return "ignored"
    customer_id = _id_of(session.get("customer"))
    account = StripeAccount.objects.unscoped_across_tenants().select_related("organization").filter(customer_id=customer_id).first()
    client = stripe_client()
    setup_intent_id = _id_of(session.get("setup_intent"))
    if account is None or client is None or not setup_intent_id:
        return "ignored"
    intent = client.v1.setup_intents.retrieve(setup_intent_id)
    payment_method = _id_of(intent.payment_method)
    if payment_method:
        client.v1.customers.update(account.customer_id, {"invoice_settings": {"default_payment_method": payment_method}})
        accounts.payment_method_added(account.organization)  # free credit -> pay as you go
    ensure_subscription(account.organization)
    return "applied"


HANDLERS = {
    "invoice.paid",
    "invoice.payment_failed",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
}


def handle_webhook(payload: bytes, signature: str | None) -> WebhookResult:
    """Verify, deduplicate by event id and apply one webhook delivery."""
    config = stripe_settings()
    if not config.enabled or not config.webhook_secret:
        return WebhookResult(
            404, "Stripe is not configured on this platform (SWITCHBOARD_STRIPE_SECRET_KEY or SWITCHBOARD_STRIPE_WEBHOOK_SECRET is empty)."
        )
    if not signature:
        return WebhookResult(400, "Missing Stripe-Signature header.")
    try:
        event = stripe.Webhook.construct_event(payload.decode("utf-8"), signature, config.webhook_secret)
    except stripe.SignatureVerificationError as error:
        return WebhookResult(400, f"Invalid signature: {error.user_message}")
    except (ValueError, TypeError, KeyError, AttributeError):  # undecodable bytes, not JSON, not an event
        return WebhookResult(400, "Invalid payload: not a JSON Stripe event.")
    fields = event.to_dict(recursive=False)
    if (
        not isinstance(fields.get("id"), str)
        or not isinstance(fields.get("type"), str)
        or not isinstance(fields.get("created"), int)
        or "data" not in fields
    ):
        return WebhookResult(400, "Invalid payload: an event needs an id, a type and a created time.")
    created = datetime.fromtimestamp(event.created, tz=UTC)
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeWebhookEvent.objects.create(event_id=event.id, type=event.type, created=created, outcome="")
        except IntegrityError:
            return WebhookResult(200, "Already handled.", "duplicate")
        if event.type in ("invoice.paid", "invoice.payment_failed"):
            outcome = _apply_invoice_event(event, created)
        elif event.type == "checkout.session.completed":
            outcome = _apply_checkout_completed(event)
        elif event.type == "checkout.session.async_payment_succeeded":
            outcome = _apply_credit_payment(event)
        elif event.type == "charge.refunded":
            outcome = credit.withdraw_refunded(charge=event.data.object.to_dict())
        elif event.type.startswith("charge.dispute."):
            outcome = credit.withdraw_disputed(dispute=event.data.object.to_dict(), at=created)
        else:
            outcome = "ignored"
        record.outcome = outcome
        record.save(update_fields=["outcome"])
    return WebhookResult(200, "OK", outcome)


def suspend_overdue(now: datetime | None = None) -> list[str]:
    """Suspend past-due organizations whose grace is over; the ids suspended."""
    now = now or timezone.now()
    suspended: list[str] = []
    due = (
        StripeAccount.objects.unscoped_across_tenants()
        .filter(grace_until__lte=now, organization__status=OrgStatus.PAST_DUE)
        .values_list("pk", flat=True)
    )
    for pk in list(due):
        with transaction.atomic():
            account = (
                StripeAccount.objects.unscoped_across_tenants().select_for_update().select_related("organization").filter(pk=pk).first()
            )
            if (
                account is None
                or account.grace_until is None
                or account.grace_until > now
                or account.organization.status != OrgStatus.PAST_DUE
            ):
                continue
            _set_status(
                account.organization,
                OrgStatus.SUSPENDED,
                f"Suspended: an invoice is still unpaid after the grace period that ended {account.grace_until:%Y-%m-%d %H:%M} UTC. "
                "Pay it in the billing portal to restore access.",
            )
            account.suspended_by_billing = True
            account.save(update_fields=["suspended_by_billing"])
            suspended.append(account.organization_id)
            logger.warning("organization %s suspended: past due beyond its grace", account.organization_id)
    return suspended


def iter_ledger(org: Organization) -> Iterable[MeterPush]:
    return MeterPush.objects.for_org(org).order_by("hour", "revision")
