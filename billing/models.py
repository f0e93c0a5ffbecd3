"""Usage events: one row per gateway request, the record every usage figure comes from."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from console.models import Organization
from console.tenancy import TenantManager


class UsageEvent(models.Model):
    # The gateway's request id, unique so a replayed event is written once.
    request_id = models.CharField(max_length=40, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
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
        indexes = [
            models.Index(fields=["organization", "at"], name="usage_org_at"),
            models.Index(fields=["organization", "route", "at"], name="usage_org_route_at"),
        ]


class Granularity(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class UsageRollup(models.Model):
    """Usage summed per time bucket (UTC) and per combination of dimensions. Rows only
    ever grow by what newly ingested events add (billing.rollups), so they stay equal to
    an aggregation of the events, and latency percentiles come from mergeable histograms."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    granularity = models.CharField(max_length=6, choices=Granularity.choices)
    bucket = models.DateTimeField()
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
                fields=["organization", "granularity", "bucket", "route", "deployment_id", "region", "key_id", "model"], name="one_rollup_per_bucket_and_dimensions"
            )
        ]
        indexes = [models.Index(fields=["organization", "granularity", "bucket"], name="rollup_org_granularity_bucket")]
