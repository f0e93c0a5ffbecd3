"""Stripe state kept on our side (billing.stripe.sync): an organization's customer and
subscription, the catalog ids (meter, product, price), the ledger of meter events pushed
per organization and hour, and the webhook events already handled.

Loaded with the billing app (billing.apps.BillingConfig.ready imports this module), so
these models belong to the `billing` app and its migrations."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenancy.models import Organization
from tenancy.scoping import TenantManager


class StripeAccount(models.Model):
    """An organization's Stripe customer and subscription, and its standing as Stripe's
    invoice webhooks last reported it."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="stripe_account")
    customer_id = models.CharField(max_length=255, unique=True)
    subscription_id = models.CharField(max_length=255, blank=True)
    subscribed_at = models.DateTimeField(null=True, blank=True, help_text="Usage from this hour on is pushed to the subscription's meter.")
    # Order-independent webhooks: the `created` time of the newest invoice event applied.
    # An older event that arrives later changes nothing.
    billing_event_at = models.DateTimeField(null=True, blank=True)
    billing_event_id = models.CharField(max_length=255, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True, help_text="A past-due organization is suspended after this.")
    # Set when billing suspended the organization, so a later paid invoice lifts only a
    # suspension that billing itself imposed (never one staff set for another reason).
    suspended_by_billing = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()

    def __str__(self) -> str:
        return f"{self.organization_id} -> {self.customer_id}"


class StripeCatalog(models.Model):
    """The Stripe objects the platform bills through, created once per Stripe account by
    billing.stripe.sync.ensure_meters_and_prices. One row per meter event name."""

    event_name = models.CharField(max_length=100, primary_key=True)
    meter_id = models.CharField(max_length=255)
    product_id = models.CharField(max_length=255)
    price_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)


class MeterPushStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    EXPIRED = "expired", "Expired (outside Stripe's 35-day window)"


class MeterPush(models.Model):
    """One meter event for one organization, meter and hour: written (pending) before it
    is sent, so a retry after any failure sends the same identifier and Stripe counts it
    once. `revision` > 0 is a correction: the meter pre-aggregates per hour and keeps the
    hour's newest event, so a revision replaces the hour's value instead of adding to it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    meter = models.CharField(max_length=100, help_text="The meter's event name.")
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    revision = models.PositiveSmallIntegerField(default=0)
    value = models.BigIntegerField(help_text="Micro-dollars (1 = $0.000001) for the whole hour.")
    identifier = models.CharField(max_length=100, unique=True)
    timestamp = models.DateTimeField(help_text="The event's time sent to Stripe, inside the hour.")
    status = models.CharField(max_length=8, choices=MeterPushStatus.choices, default=MeterPushStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    # What rating said the hour was worth on the latest run, when it differs from `value`
    # and no further revision could be pushed: left to the invoice reconciliation.
    latest_rated_value = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["hour", "revision"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "meter", "hour", "revision"], name="one_meter_push_per_hour_revision")
        ]
        indexes = [models.Index(fields=["status", "organization"], name="meter_push_status_org")]

    def __str__(self) -> str:
        return self.identifier


class StripeWebhookEvent(models.Model):
    """A webhook event already handled: Stripe delivers at least once, so a replay is
    answered 200 and changes nothing."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    created = models.DateTimeField(help_text="The event's creation time at Stripe.")
    outcome = models.CharField(max_length=20, help_text="applied, stale or ignored.")
    received_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"
