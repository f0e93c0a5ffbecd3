"""Celery tasks of billing: thin, idempotent, by id.

Scheduled by Celery beat (config/settings.py, CELERY_BEAT_SCHEDULE): spend limits every
minute, budgets every 5 minutes, invoice closing hourly, Stripe meter pushes every 5 minutes,
the Stripe reconciliation hourly and past-due suspensions every 15 minutes (the Stripe
tasks do nothing while Stripe is off).
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from billing import budgets, caps, invoices, rating
from billing.models import BillingAccount
from billing.stripe import reconcile as stripe_reconcile
from billing.stripe import sync as stripe_sync
from tenancy.models import Organization


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def push_meter_events() -> int:
    """Fans out one push per organization with a Stripe subscription."""
    org_ids = stripe_sync.organizations_to_push()
    for org_id in org_ids:
        push_organization_meter_events.delay(org_id)
    return len(org_ids)


@shared_task(acks_late=True, time_limit=240, soft_time_limit=220)
def push_organization_meter_events(org_id: str) -> dict[str, int] | None:
    report = stripe_sync.push_organization(org_id)
    if report is None:
        return None
    return {
        "sent": len(report.sent),
        "already_sent": len(report.already_sent),
        "pending": len(report.pending),
        "expired": len(report.expired),
    }


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def reconcile_stripe() -> int:
    """Fans out one reconciliation per organization with a Stripe subscription."""
    org_ids = stripe_sync.organizations_to_push()
    for org_id in org_ids:
        reconcile_stripe_organization.delay(org_id)
    return len(org_ids)


@shared_task(acks_late=True, time_limit=600, soft_time_limit=570)
def reconcile_stripe_organization(org_id: str) -> dict[str, int | str] | None:
    report = stripe_reconcile.reconcile_organization(org_id)
    if report is None:
        return None
    return {
        "hours_checked": report.hours_checked,
        "corrections": len(report.corrections),
        "unsettled": len(report.unsettled),
        "carried": len(report.carried),
        "adjustments_sent": len(report.adjustments_sent),
        "stopped": report.stopped,
    }


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def suspend_overdue_organizations() -> list[str]:
    return stripe_sync.suspend_overdue()


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def enforce_spend_limits() -> int:
    """Holds the deployments of organizations at their hard spend limit, and releases
    those whose limit was lifted (billing.caps); returns how many changed."""
    now = timezone.now()
    return sum(1 for org in caps.organizations_to_check() if caps.enforce(org, now=now))


@shared_task(acks_late=True, time_limit=240, soft_time_limit=220)
def check_budgets() -> int:
    """Sends the budget alerts newly reached, for every organization with a budget."""

    sent = 0
    for org in Organization.objects.filter(
        pk__in=BillingAccount.objects.unscoped_across_tenants().exclude(monthly_budget=None).values("organization_id")
    ):
        sent += len(budgets.check(org))
    return sent


@shared_task(acks_late=True, time_limit=600, soft_time_limit=580)
def close_invoices() -> int:
    """Closes last month's invoice of every organization (idempotent: a closed month is
    returned as it is). Runs hourly, so a month closes within an hour of its end."""
    now = timezone.now()
    last_month = rating.month_start(rating.month_start(now) - timedelta(days=1))
    organizations = list(Organization.objects.filter(created_at__lt=rating.next_month(last_month)))
    for org in organizations:
        invoices.close_period(org, last_month, now=now)
    return len(organizations)
