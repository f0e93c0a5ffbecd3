"""Prepaid credit bought through Stripe Checkout: which amounts may be bought, the
Checkout Session that buys them (payment mode, one line of the bought amount), and the
one `CreditGrant` a paid session makes.

The Stripe calls stay in billing.stripe.sync, which creates the session and routes the
`checkout.session.completed` and `checkout.session.async_payment_succeeded` webhooks
here once it has found the organization by the session's customer. That customer decides
who is credited, never the metadata: a session whose metadata names another organization
credits the customer's own and is logged. The amount granted is Stripe's `amount_total`
(what was paid), not the metadata's. A session is granted once, whatever the number of
deliveries or events: its id is unique among grants.

A purchase the buyer takes back takes its credit back: a refund (`charge.refunded`,
cumulative, so any order of deliveries ends the same) and a dispute (`charge.dispute.*`:
held while open or lost, given back when won) withdraw from the grant what is still
unspent. What was already spent stays spent; the shortfall is logged and audited for
staff, as Stripe's own dispute process is where that money is argued.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Sum

from billing.models import CreditGrant
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.decimals import plain
from tenancy.errors import ServiceError
from tenancy.models import Organization, Role

logger = logging.getLogger(__name__)


class PaymentsUnavailable(ServiceError):
    """Stripe could not start the Checkout (unreachable, or refused): try again later."""

    status_code = 503
    code = "payments_unavailable"


PURPOSE = "prepaid_credit"
PRODUCT_NAME = "Switchboard prepaid credit"
CURRENCY = "usd"
MIN_CREDIT = Decimal("5")
MAX_CREDIT = Decimal("10000")
CENT = Decimal("0.01")
UNAVAILABLE = "Stripe could not start the Checkout just now; nothing was charged. Try again in a minute."


def credit_amount(value: Decimal) -> Decimal:
    """An amount an owner may buy: whole cents, from $5 to $10,000."""
    if not value.is_finite():
        raise ServiceError("Enter the amount of credit to buy in US dollars, such as 25 or 25.50.", field="amount")
    if not MIN_CREDIT <= value <= MAX_CREDIT:
        raise ServiceError(f"Credit can be bought from ${plain(MIN_CREDIT)} to ${plain(MAX_CREDIT)} at a time.", field="amount")
    if value != value.quantize(CENT):
        raise ServiceError(f"Give the amount in whole cents (at most two decimals); {plain(value)} is not.", field="amount")
    return value.quantize(CENT)


def session_params(
    *, org: Organization, customer_id: str, amount: Decimal, success_url: str, cancel_url: str
) -> stripe.params.checkout.SessionCreateParams:
    """The Checkout Session that charges `amount` (already checked) once."""
    return {
        "mode": "payment",
        "customer": customer_id,
        "line_items": [
            {
                "price_data": {"currency": CURRENCY, "unit_amount": int(amount * 100), "product_data": {"name": PRODUCT_NAME}},
                "quantity": 1,
            }
        ],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "metadata": {"organization_id": org.pk, "purpose": PURPOSE, "amount": plain(amount)},
    }


def is_credit_session(session: Mapping[str, Any]) -> bool:
    metadata = session.get("metadata") or {}
    return session.get("mode") == "payment" and isinstance(metadata, Mapping) and metadata.get("purpose") == PURPOSE


def grant_for_paid_session(*, org: Organization, session: Mapping[str, Any]) -> str:
    """The grant for a paid credit session of `org`'s customer: "applied" once,
    "duplicate" for the same session again, "unpaid" before the payment has succeeded
    (a delayed method: granted on `checkout.session.async_payment_succeeded`), "ignored"
    for a session that is not a usable credit purchase."""
    session_id = session.get("id")
    if not isinstance(session_id, str) or not session_id.startswith("cs_"):
        return "ignored"
    if session.get("payment_status") != "paid":
        return "unpaid"
    amount_total = session.get("amount_total")
    currency = str(session.get("currency") or "").lower()
    if isinstance(amount_total, bool) or not isinstance(amount_total, int) or amount_total <= 0 or currency != CURRENCY:
        logger.error("credit session %s of %s not granted: amount_total %r %s", session_id, org.pk, amount_total, currency)
        return "ignored"
    amount = Decimal(amount_total).scaleb(-2)
    metadata = session.get("metadata") or {}
    if metadata.get("organization_id") != org.pk:
        logger.warning(
            "credit session %s names organization %r in its metadata but was paid by %s's customer: %s is credited",
            session_id,
            metadata.get("organization_id"),
            org.pk,
            org.pk,
        )
    try:
        asked = Decimal(str(metadata.get("amount")))
    except InvalidOperation:
        asked = None
    if asked != amount:
        logger.warning("credit session %s asked for %r but Stripe's amount_total is %s: %s is granted", session_id, asked, amount, amount)
    payment_intent = session.get("payment_intent")
    try:
        with transaction.atomic():
            grant = CreditGrant.objects.create(
                organization=org,
                amount=amount,
                reason=f"Prepaid credit (Stripe Checkout {session_id})",
                stripe_checkout_session=session_id,
                stripe_payment_intent=payment_intent if isinstance(payment_intent, str) else "",
            )
    except IntegrityError:  # this session was granted already (a replay, or its other event)
        return "duplicate"
    audit.record(
        OrgContext(organization=org, role=Role.OWNER),
        "billing.credit_purchased",
        target_type="credit_grant",
        target_id=grant.pk,
        after={"amount": plain(amount), "stripe_checkout_session": session_id},
    )
    return "applied"


def _cents(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return Decimal(value).scaleb(-2)


def _grant_paid_by(payment_intent: object) -> CreditGrant | None:
    """The grant a payment bought; payment ids are Stripe's own and unique."""
    if not isinstance(payment_intent, str) or not payment_intent.startswith("pi_"):
        return None
    return CreditGrant.objects.unscoped_across_tenants().select_related("organization").filter(stripe_payment_intent=payment_intent).first()


def withdraw_refunded(*, charge: Mapping[str, Any]) -> str:
    """A refund of a credit purchase (all of it, or part): withdraws that much of the
    grant. `amount_refunded` is the charge's running total, so replays and any order of
    several refunds end with the same figure."""
    grant = _grant_paid_by(charge.get("payment_intent"))
    refunded = _cents(charge.get("amount_refunded"))
    if grant is None or refunded is None:
        return "ignored"
    refunded = min(refunded, grant.amount)
    if refunded <= grant.refunded:
        return "duplicate"
    return _withdraw(grant, refunded=refunded, disputed=grant.disputed, cause=f"refunded (charge {charge.get('id')})")


def withdraw_disputed(*, dispute: Mapping[str, Any], at: datetime) -> str:
    """A dispute of a credit purchase: while open or lost its amount is withdrawn; won (or
    closed as a warning only), it is given back. An event older than the last one applied
    changes nothing."""
    grant = _grant_paid_by(dispute.get("payment_intent"))
    amount = _cents(dispute.get("amount"))
    status = dispute.get("status")
    if grant is None or amount is None or not isinstance(status, str):
        return "ignored"
    if grant.dispute_event_at is not None and at < grant.dispute_event_at:
        return "stale"
    disputed = Decimal(0) if status in DISPUTE_SETTLED_FOR_BUYER else min(amount, grant.amount)
    grant.dispute_event_at = at
    if disputed == grant.disputed:
        grant.save(update_fields=["dispute_event_at"])
        return "duplicate"
    return _withdraw(grant, refunded=grant.refunded, disputed=disputed, cause=f"dispute {dispute.get('id')} {status}")


# A dispute in these states no longer holds the money (Stripe's Dispute.status).
DISPUTE_SETTLED_FOR_BUYER = frozenset({"won", "warning_closed"})


def _withdraw(grant: CreditGrant, *, refunded: Decimal, disputed: Decimal, cause: str) -> str:
    used = grant.drawdowns.aggregate(used=Sum("amount"))["used"] or Decimal(0)
    before = {"refunded": plain(Decimal(grant.refunded).quantize(CENT)), "disputed": plain(Decimal(grant.disputed).quantize(CENT))}
    grant.refunded, grant.disputed = refunded.quantize(CENT), disputed.quantize(CENT)
    grant.save(update_fields=["refunded", "disputed", "dispute_event_at"])
    unrecovered = max(Decimal(0), grant.withdrawn - (grant.amount - used))
    if unrecovered:
        logger.error(
            "credit grant %s of %s: %s, but %s of it was already spent on closed invoices",
            grant.pk,
            grant.organization_id,
            cause,
            unrecovered,
        )
    audit.record(
        OrgContext(organization=grant.organization, role=Role.OWNER),
        "billing.credit_withdrawn",
        target_type="credit_grant",
        target_id=grant.pk,
        before=before,
        after={
            "refunded": plain(grant.refunded),
            "disputed": plain(grant.disputed),
            "cause": cause,
            "spent_before": plain(unrecovered.quantize(CENT)),
        },
    )
    return "applied"
