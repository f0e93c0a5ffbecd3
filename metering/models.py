"""Usage events, one row per gateway request, the record every usage figure comes from,
and their rollups per time bucket and dimension.

The tables keep the names they had when metering lived in billing (billing_usageevent,
billing_usagerollup): moving the models moved no data (metering's first migration only
takes them over in Django's state).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenancy.models import Organization
from tenancy.scoping import TenantManager


class UsageEvent(models.Model):
    # The gateway's request id, unique so a replayed event is written once.
    request_id = models.CharField(max_length=40)
    # Each index and constraint costs every insert, and ingest speed is the point: the
    # (organization, at) index below serves the foreign key too; a constraint rather than
    # unique=True, which would add a second (pattern-matching) index on PostgreSQL; and
    # no database-level foreign key, whose check per row costs as much as the insert. The
    # ingester writes only events of existing organizations (metering.copy_events), and
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
    # USD, exact: six-decimal prices per million tokens give at most twelve decimals.
    cost = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        default=0,
        help_text="An external provider's own cost of the tokens, which rating marks up; 0 for a dedicated deployment.",
    )
    charge = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="What the request was charged, as its x-switchboard-cost-usd header said (the price book's token price for "
        "the model served, else the provider's cost with the markup; 0 for a dedicated deployment, billed by GPU time). "
        "Null on events recorded before it was kept.",
    )
    served_model = models.CharField(
        max_length=100,
        blank=True,
        help_text="The model the answering upstream was sent (a provider's model, a replica's revision's): what token "
        "prices are keyed on, whatever name the caller used. Empty when nothing answered, and on events recorded "
        "before it was kept.",
    )

    objects = TenantManager()

    class Meta:
        db_table = "billing_usageevent"
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
    per bucket instead of every combination (metering.rollups)."""

    ALL = "all", "Every dimension"
    NONE = "none", "Organization total"
    ROUTE = "route", "Route"
    DEPLOYMENT = "deployment_id", "Deployment"
    REGION = "region", "Region"
    KEY = "key_id", "API key"
    MODEL = "model", "Model"


class UsageRollup(models.Model):
    """Usage summed per time bucket (UTC) and per combination of dimensions. Rows only
    ever grow by what newly ingested events add (metering.rollups), so they stay equal to
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
    served_model = models.CharField(max_length=100, blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    client_errors = models.PositiveBigIntegerField(default=0, help_text="4xx answers.")
    server_errors = models.PositiveBigIntegerField(default=0, help_text="5xx answers.")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=30, decimal_places=12, default=0, help_text="External providers' own cost (rating's input).")
    charge = models.DecimalField(
        max_digits=30, decimal_places=12, default=0, help_text="What the requests were charged per token (an earlier event's: its cost)."
    )
    latency_histogram = models.JSONField(default=dict, help_text="Bucket index -> count (metering.histogram).")

    objects = TenantManager()

    class Meta:
        db_table = "billing_usagerollup"
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "organization",
                    "granularity",
                    "bucket",
                    "breakdown",
                    "route",
                    "deployment_id",
                    "region",
                    "key_id",
                    "model",
                    "served_model",
                ],  # fmt: skip
                name="one_rollup_per_bucket_and_dimensions",
            )
        ]
