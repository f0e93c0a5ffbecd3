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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import stripe
from django.db import IntegrityError, transaction

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
    try:
        with transaction.atomic():
            grant = CreditGrant.objects.create(
                organization=org, amount=amount, reason=f"Prepaid credit (Stripe Checkout {session_id})", stripe_checkout_session=session_id
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
