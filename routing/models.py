"""Model routes: the public model names an organization calls, and where each sends traffic."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from deployments.models import Deployment
from tenancy.ids import public_id_field
from tenancy.models import Organization
from tenancy.scoping import TenantManager

# Public model names look like OpenAI's: letters, digits and . _ - : / (e.g. "chat-default").
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"
model_name_validator = RegexValidator(
    MODEL_NAME_PATTERN, "Use letters, digits and . _ - : / (up to 100 characters), starting with a letter or digit."
)


class Strategy(models.TextChoices):
    WEIGHTED = "weighted", "Weighted split"
    LOWEST_COST = "lowest_cost", "Lowest cost"
    LOWEST_LATENCY = "lowest_latency", "Lowest latency"
    BALANCED = "balanced", "Balanced (latency x cost)"
    ORDERED = "ordered", "Fixed order"


class ExternalProvider(models.Model):
    """An OpenAI-compatible API outside Switchboard. The API key is stored encrypted
    (routing.secrets) and never shown again after it is saved."""

    id = public_id_field("prv")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=60)
    base_url = models.URLField(max_length=300, help_text="The API root, e.g. https://api.example.com/v1")
    region = models.CharField(max_length=40, help_text="Where the provider processes requests, for region allow-lists.")
    api_key_encrypted = models.TextField(blank=True)
    api_key_last4 = models.CharField(max_length=4, blank=True)
    input_price_per_mtok = models.DecimalField(
        max_digits=14, decimal_places=6, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )
    output_price_per_mtok = models.DecimalField(
        max_digits=14, decimal_places=6, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="provider_name_unique_per_org")]

    def __str__(self) -> str:
        return self.name


class ModelRoute(models.Model):
    """A public model name and its routing policy."""

    id = public_id_field("rte")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, validators=[model_name_validator])
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.WEIGHTED)
    allowed_regions = models.JSONField(default=list, blank=True, help_text="Empty: any region. Never broken, even on failover.")
    fallbacks = models.JSONField(default=list, blank=True, help_text="Names of other routes to try, in order, when every target fails.")
    max_attempts = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(10)])
    attempt_timeout_s = models.FloatField(default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(600)])
    deadline_s = models.FloatField(default=120.0, validators=[MinValueValidator(0.1), MaxValueValidator(3600)])
    breaker_failures = models.PositiveSmallIntegerField(default=5, validators=[MinValueValidator(1), MaxValueValidator(100)])
    breaker_cooldown_s = models.FloatField(default=10.0, validators=[MinValueValidator(0.1), MaxValueValidator(3600)])
    # USD a month of the per-token charges of requests made through this route's name
    # (a dedicated deployment's requests bill GPU time, not tokens); null: no budget.
    monthly_budget = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="route_name_unique_per_org")]

    def __str__(self) -> str:
        return self.name


class RouteTarget(models.Model):
    """One place a route can send a request: a deployment (any READY replica in an
    allowed region) or an external provider's model."""

    id = public_id_field("tgt")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    route = models.ForeignKey(ModelRoute, on_delete=models.CASCADE, related_name="targets")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    provider = models.ForeignKey(ExternalProvider, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    provider_model = models.CharField(max_length=200, blank=True)
    weight = models.PositiveIntegerField(default=100, validators=[MaxValueValidator(10_000)])
    position = models.PositiveIntegerField(default=0)

    objects = TenantManager()

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(deployment__isnull=False, provider__isnull=True) | models.Q(deployment__isnull=True, provider__isnull=False)
                ),
                name="target_is_deployment_or_provider",
            )
        ]

    @property
    def label(self) -> str:
        if self.deployment is not None:
            return f"deployment:{self.deployment.name}"
        if self.provider is not None:
            return f"provider:{self.provider.name}/{self.provider_model}"
        return "no target"
