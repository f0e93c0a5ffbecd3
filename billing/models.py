"""Usage events: one row per gateway request, the record every usage figure comes from."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from console.ids import public_id_field
from console.models import Organization
from console.tenancy import TenantManager


class UsageEvent(models.Model):
    # The gateway's request id, unique so a replayed event is written once.
    request_id = models.CharField(max_length=40)
    # Each index and constraint costs every insert, and ingest speed is the point: the
    # (organization, at) index below serves the foreign key too; a constraint rather than
    # unique=True, which would add a second (pattern-matching) index on PostgreSQL; and
    # no database-level foreign key, whose check per row costs as much as the insert. The
    # ingester writes only events of existing organizations (billing.copy_events), and
    # deleting an organization deletes its usage (Django's cascade).
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    at = models.DateTimeField(default=timezone.now, help_text="When the request arrived.")
    key_id = models.CharField(max_length=40, blank=True, help_text="Public id of the API key; empty for console playground calls.")
    endpoint = models.CharField(max_length=30)
    model = models.CharField(max_length=100, help_text="The model name the caller asked for.")
    route = models.CharField(max_length=100, blank=True, help_text="The route that served it; empty when the name was a deployment's.")
    target = models.CharField(max_length=200, blank=True)
    deployment_id = models.CharField(max_length=40, blank=True)
    region = models.CharField(max_length=40, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=60, blank=True)
    streamed = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField()
    ttft_ms = models.FloatField(null=True, blank=True)
    # USD at the route's prices, exact: six-decimal prices per million tokens give at
    # most twelve decimals.
    cost = models.DecimalField(max_digits=24, decimal_places=12, default=0)

    objects = TenantManager()

    class Meta:
        ordering = ["-at"]
        constraints = [models.UniqueConstraint(fields=["request_id"], name="one_usage_event_per_request")]
        indexes = [models.Index(fields=["organization", "at"], name="usage_org_at")]


class Granularity(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class Breakdown(models.TextChoices):
    """Which dimensions a rollup row keeps; the others hold ''. Every event adds to one
    row of each breakdown, so a question about one dimension (or none) reads a few rows
    per bucket instead of every combination (billing.rollups)."""

    ALL = "all", "Every dimension"
    NONE = "none", "Organization total"
    ROUTE = "route", "Route"
    DEPLOYMENT = "deployment_id", "Deployment"
    REGION = "region", "Region"
    KEY = "key_id", "API key"
    MODEL = "model", "Model"


class UsageRollup(models.Model):
    """Usage summed per time bucket (UTC) and per combination of dimensions. Rows only
    ever grow by what newly ingested events add (billing.rollups), so they stay equal to
    an aggregation of the events, and latency percentiles come from mergeable histograms."""

    # The unique constraint's leading columns index organization, granularity and bucket;
    # no database-level foreign key, as for UsageEvent.
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    granularity = models.CharField(max_length=6, choices=Granularity.choices)
    bucket = models.DateTimeField()
    breakdown = models.CharField(max_length=13, choices=Breakdown.choices, default=Breakdown.ALL)
    route = models.CharField(max_length=100, blank=True)
    deployment_id = models.CharField(max_length=40, blank=True)
    region = models.CharField(max_length=40, blank=True)
    key_id = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=100, blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    client_errors = models.PositiveBigIntegerField(default=0, help_text="4xx answers.")
    server_errors = models.PositiveBigIntegerField(default=0, help_text="5xx answers.")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=30, decimal_places=12, default=0)
    latency_histogram = models.JSONField(default=dict, help_text="Bucket index -> count (billing.histogram).")

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "granularity", "bucket", "breakdown", "route", "deployment_id", "region", "key_id", "model"],
                name="one_rollup_per_bucket_and_dimensions",
            )
        ]


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


class GpuPrice(models.Model):
    """What a dedicated replica costs per GPU-second of its GPU type, cold start included."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Empty: the platform's price."
    )
    gpu_type = models.ForeignKey("deployments.GpuType", on_delete=models.PROTECT, related_name="+")
    price_per_second = models.DecimalField(max_digits=20, decimal_places=12)
    effective_from = models.DateTimeField(help_text="On a whole hour (UTC).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["gpu_type", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "gpu_type", "effective_from"], name="one_gpu_price_version", nulls_distinct=False
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
    """Prepaid or promotional credit, drawn down (earliest expiry first) before charging."""

    id = public_id_field("crd")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    reason = models.CharField(max_length=200)
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["expires_at", "granted_at"]


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
