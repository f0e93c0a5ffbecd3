"""Plans, the price book, credits, invoices and budget alerts."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone

from tenancy.ids import public_id_field
from tenancy.models import Organization
from tenancy.scoping import TenantManager

# ---------------------------------------------------------------------------------------
# Plans, the price book, credits and invoices. Money is Decimal in the organization's
# currency; unit prices keep their sub-cent precision and rounding happens once, on each
# invoice line (billing.rating).


class Plan(models.TextChoices):
    FREE = "free", "Free"
    PAY_AS_YOU_GO = "payg", "Pay as you go"
    ENTERPRISE = "enterprise", "Enterprise"


class BillingAccount(models.Model):
    """An organization's plan and spend settings. Created on first use with the default
    plan (billing.accounts.account_for)."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="billing_account")
    plan = models.CharField(max_length=10, choices=Plan.choices, default=Plan.PAY_AS_YOU_GO)
    currency = models.CharField(max_length=3, default="usd")
    monthly_budget = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="Alerts at 50%, 80% and 100%; does not stop traffic."
    )
    alert_webhook_url = models.URLField(blank=True, help_text="Budget alerts are also POSTed here as JSON.")
    committed_monthly_minimum = models.DecimalField(
        max_digits=14, decimal_places=2, default=0, help_text="Enterprise: a month is invoiced at least this much."
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()


class ModelPrice(models.Model):
    """Prices per million tokens of a model name, from `effective_from` until the next
    version. An organization's own row (an enterprise deal) wins over the platform's."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Empty: the platform's price."
    )
    model = models.CharField(max_length=100)
    input_price_per_mtok = models.DecimalField(max_digits=18, decimal_places=9)
    output_price_per_mtok = models.DecimalField(max_digits=18, decimal_places=9)
    effective_from = models.DateTimeField(help_text="On a whole hour (UTC).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "model", "effective_from"], name="one_model_price_version", nulls_distinct=False
            )
        ]


class ProviderMarkup(models.Model):
    """External providers' cost is passed through with this markup."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Empty: the platform's markup."
    )
    percent = models.DecimalField(max_digits=7, decimal_places=3)
    effective_from = models.DateTimeField(help_text="On a whole hour (UTC).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-effective_from"]
        constraints = [models.UniqueConstraint(fields=["organization", "effective_from"], name="one_markup_version", nulls_distinct=False)]


class CreditGrant(models.Model):
    """Prepaid or promotional credit, drawn down (earliest expiry first) before charging.
    Granted by staff (billing.staff_ops) or bought through Stripe Checkout
    (billing.stripe.credit), then with the paid session's id: one grant per session."""

    id = public_id_field("crd")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    reason = models.CharField(max_length=200)
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    stripe_checkout_session = models.CharField(
        max_length=255, blank=True, default="", help_text="The paid Checkout Session (cs_...) that bought it; empty for staff grants."
    )
    stripe_payment_intent = models.CharField(
        max_length=255, blank=True, default="", help_text="The payment (pi_...) that bought it: what a refund or dispute names."
    )
    refunded = models.DecimalField(max_digits=14, decimal_places=2, default=0, help_text="Of the purchase, refunded through Stripe.")
    disputed = models.DecimalField(
        max_digits=14, decimal_places=2, default=0, help_text="Of the purchase, held by an open or lost dispute (a chargeback)."
    )
    dispute_event_at = models.DateTimeField(null=True, blank=True, help_text="The latest dispute event applied (older ones are stale).")

    objects = TenantManager()

    @property
    def withdrawn(self) -> Decimal:
        """What the buyer has taken back: refunded or disputed, at most the grant."""
        return min(self.amount, self.refunded + self.disputed)

    class Meta:
        ordering = ["expires_at", "granted_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_checkout_session"],
                condition=~models.Q(stripe_checkout_session=""),
                name="one_credit_grant_per_checkout_session",
            )
        ]


class Invoice(models.Model):
    """A closed month: immutable once written (billing.invoices.close_period)."""

    id = public_id_field("inv")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    plan = models.CharField(max_length=10, choices=Plan.choices)
    subtotal = models.DecimalField(max_digits=14, decimal_places=2)
    credits_applied = models.DecimalField(max_digits=14, decimal_places=2)
    minimum_adjustment = models.DecimalField(max_digits=14, decimal_places=2)
    carried_adjustments = models.DecimalField(
        max_digits=14, decimal_places=2, default=0, help_text="Differences carried from earlier months (CarriedAdjustment), signed."
    )
    total = models.DecimalField(max_digits=14, decimal_places=2)
    closed_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()

    class Meta:
        ordering = ["-period_start"]
        constraints = [models.UniqueConstraint(fields=["organization", "period_start"], name="one_invoice_per_period")]

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise ValueError("A closed invoice is immutable.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        TOKENS = "tokens", "Tokens"
        PROVIDER = "provider", "External provider"
        GPU = "gpu", "Dedicated GPU time"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=24, decimal_places=6)
    unit = models.CharField(max_length=40)
    unit_price = models.DecimalField(max_digits=24, decimal_places=12)
    exact_amount = models.DecimalField(max_digits=30, decimal_places=12)
    amount = models.DecimalField(max_digits=14, decimal_places=2, help_text="exact_amount rounded half up to the cent: the only rounding.")

    class Meta:
        ordering = ["position"]


class BudgetAlert(models.Model):
    """One per organization, month and threshold: sent once."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    threshold_percent = models.PositiveSmallIntegerField()
    budget = models.DecimalField(max_digits=14, decimal_places=2)
    spend = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "period_start", "threshold_percent"], name="one_budget_alert_per_threshold")
        ]


class CreditDrawdown(models.Model):
    """How much of a grant a closed invoice used: what remains of a grant is its amount
    less its drawdowns."""

    grant = models.ForeignKey(CreditGrant, on_delete=models.CASCADE, related_name="drawdowns")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="drawdowns")
    amount = models.DecimalField(max_digits=14, decimal_places=2)


class CarriedAdjustment(models.Model):
    """A month's difference between what rating says it is worth and what Stripe billed for
    it, found by the reconciliation (billing.stripe.reconcile) once Stripe's invoice for that
    month was final. Carried onto the invoice of the month it reached Stripe in (as a pending
    invoice item there, ours as a line), signed: positive charges, negative refunds."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"

    id = public_id_field("adj")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    source_period_start = models.DateTimeField(help_text="The month it corrects.")
    rated_micros = models.BigIntegerField(help_text="What rating said the month was worth, in micro-dollars.")
    stripe_micros = models.BigIntegerField(help_text="What Stripe's meter billed for the month, in micro-dollars.")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    description = models.CharField(max_length=300)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    period_start = models.DateTimeField(null=True, blank=True, help_text="The month whose invoice carries it: set when sent.")
    stripe_invoice_item_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["organization", "period_start"], name="carried_adjustment_period")]
