"""Monthly budgets and their alerts at 50%, 80% and 100% of the budget: shown in the
console, emailed to the owners (the console log in development) and POSTed as JSON to the
organization's alert webhook when it has one. Each alert is sent once per month.

A budget only warns; the hard limit that refuses traffic is the staff's spend cap (or the
free plan's credit), enforced by the gateway (routing.gateway.spend).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from billing import rating
from billing.invoices import account_for
from billing.models import BillingAccount, BudgetAlert
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.decimals import plain
from tenancy.errors import ServiceError
from tenancy.models import Membership, Organization, Role
from tenancy.network import RefusedAddress, Unresolvable, post_json
from tenancy.network import refusal as outbound_refusal

log = logging.getLogger("switchboard.billing")
THRESHOLDS = (50, 80, 100)


def set_budget(ctx: OrgContext, monthly_budget: Decimal | None, alert_webhook_url: str) -> BillingAccount:
    if monthly_budget is not None and monthly_budget <= 0:
        raise ServiceError("A monthly budget must be more than $0; leave it empty for none.", field="monthly_budget")
    if alert_webhook_url:
        problem = outbound_refusal(alert_webhook_url, settings.OUTBOUND_POLICY)
        if problem:
            raise ServiceError(f"The alert webhook: {problem}", field="alert_webhook_url")
    account = account_for(ctx.organization)
    before = {
        "monthly_budget": str(account.monthly_budget) if account.monthly_budget is not None else None,
        "alert_webhook_url": account.alert_webhook_url,
    }
    with transaction.atomic():
        account.monthly_budget, account.alert_webhook_url = monthly_budget, alert_webhook_url
        account.save()
        after = {"monthly_budget": str(monthly_budget) if monthly_budget is not None else None, "alert_webhook_url": alert_webhook_url}
        audit.record(ctx, "billing.budget_changed", target_type="organization", target_id=ctx.organization.pk, before=before, after=after)
    return account


@dataclass(frozen=True)
class BudgetProgress:
    """This month's spend against the monthly budget, as the alerts measure it."""

    spend: Decimal  # this month's charges so far, before credits, to the cent
    budget: Decimal

    @property
    def warn_at(self) -> Decimal:
        """Where the bar turns to a warning: the 80% alert."""
        return self.budget * Decimal("0.8")

    @property
    def percent(self) -> int:
        """Rounded down, so the bar reaches 100 only once the budget is reached."""
        return int(self.spend * 100 / self.budget) if self.budget else 0


def progress(org: Organization, *, now: datetime | None = None) -> BudgetProgress | None:
    budget = account_for(org).monthly_budget
    if budget is None:
        return None
    return BudgetProgress(spend=rating.round_to_cents(rating.month_to_date(org, now or datetime.now(UTC))), budget=budget)


def check(org: Organization, *, now: datetime | None = None) -> list[BudgetAlert]:
    """Sends the alerts this month's spend has newly crossed; returns them."""
    now = now or datetime.now(UTC)
    account = account_for(org)
    if account.monthly_budget is None:
        return []
    spend = rating.month_to_date(org, now)
    period = rating.month_start(now)
    sent = []
    for threshold in THRESHOLDS:
        if spend * 100 < account.monthly_budget * threshold:
            break
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    organization=org,
                    period_start=period,
                    threshold_percent=threshold,
                    budget=account.monthly_budget,
                    spend=spend,
                    created_at=now,
                )
        except IntegrityError:
            continue  # sent already (or by another worker just now)
        _notify(org, account, alert)
        sent.append(alert)
    return sent


def _notify(org: Organization, account: BillingAccount, alert: BudgetAlert) -> None:
    subject = f"[Switchboard] {org.name} has used {alert.threshold_percent}% of its monthly budget"
    body = f"{org.name} has spent ${alert.spend} of its ${alert.budget} budget this month ({alert.threshold_percent}% reached)."
    owners = list(Membership.objects.filter(organization=org, role=Role.OWNER).values_list("user__email", flat=True))
    if owners:
        send_mail(subject, body, None, owners, fail_silently=True)
    if account.alert_webhook_url:
        payload = {
            "type": "budget.threshold_reached",
            "organization": org.pk,
            "threshold_percent": alert.threshold_percent,
            "budget": plain(alert.budget),
            "spend": plain(alert.spend),
            "currency": account.currency,
            "period_start": alert.period_start.isoformat(),
        }
        try:
            post_json(account.alert_webhook_url, payload, settings.OUTBOUND_POLICY, timeout=5.0)
        except (httpx.HTTPError, RefusedAddress, Unresolvable) as error:  # the alert stays in the console either way
            log.warning("budget alert webhook for %s failed: %s", org.pk, error)
