from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from deployments import canaries, environments, services
from deployments.canary_analysis import RevisionStats
from deployments.models import Canary, CatalogModel, Deployment, DeploymentRevision, GpuType


class GpuTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuType
        fields = ["code", "memory_gb", "default_price_per_hour", "price_source"]
        read_only_fields = fields


class RevisionSerializer(serializers.ModelSerializer):
    gpu_type = serializers.CharField(source="gpu_type_id", read_only=True)
    promoted_from = serializers.SerializerMethodField(
        help_text="A revision promoted from a staging environment: that deployment's name and the revision it copies."
    )

    class Meta:
        model = DeploymentRevision
        fields = [
            "id",
            "number",
            "model",
            "gpu_type",
            "allowed_regions",
            "min_replicas",
            "max_replicas",
            "target_concurrency",
            "scale_down_delay_s",
            "idle_timeout_s",
            "promoted_from",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer("PromotedFrom", {"deployment": serializers.CharField(), "revision": serializers.IntegerField()}, allow_null=True)
    )
    def get_promoted_from(self, revision: DeploymentRevision) -> dict[str, Any] | None:
        return services.promoted_from(revision)


class DeploymentSerializer(serializers.ModelSerializer):
    revision = RevisionSerializer(source="current_revision", read_only=True)
    estimated_cost_per_hour = serializers.SerializerMethodField(help_text="USD per hour at min and at max replicas.")
    production = serializers.CharField(
        source="production_id", read_only=True, allow_null=True, help_text="A staging environment's production deployment (its id)."
    )
    staging = serializers.SerializerMethodField(help_text="A production deployment's staging environment (its id), if it has one.")

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "environment",
            "production",
            "staging",
            "status",
            "status_reason",
            "created_at",
            "revision",
            "estimated_cost_per_hour",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_staging(self, deployment: Deployment) -> str | None:
        staging = environments.staging_of(deployment)
        return None if staging is None else staging.pk

    def get_estimated_cost_per_hour(self, deployment: Deployment) -> dict[str, str]:
        low, high = services.estimated_cost_per_hour(
            services.DeploymentSpec.of(deployment.revision), organization_id=deployment.organization_id
        )
        return {"at_min": str(low.quantize(Decimal("0.0001"))), "at_max": str(high.quantize(Decimal("0.0001")))}


class _SpecFields(serializers.Serializer):
    model = serializers.CharField(max_length=100, help_text="A model from GET /api/v1/models/: built-in or your organization's own.")
    gpu_type = serializers.CharField(max_length=20)
    allowed_regions = serializers.ListField(child=serializers.CharField(max_length=40), min_length=1, max_length=20)
    min_replicas = serializers.IntegerField(min_value=0, max_value=services.MAX_REPLICAS_PER_DEPLOYMENT)
    max_replicas = serializers.IntegerField(min_value=1, max_value=services.MAX_REPLICAS_PER_DEPLOYMENT)
    target_concurrency = serializers.IntegerField(min_value=1, max_value=10_000)
    scale_down_delay_s = serializers.IntegerField(min_value=0, max_value=86_400)
    idle_timeout_s = serializers.IntegerField(min_value=0, max_value=7 * 86_400)
    environment = serializers.ChoiceField(choices=Deployment.Environment.choices)


class DeploymentCreateSerializer(_SpecFields):
    name = serializers.CharField(max_length=60)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        defaults = services.DeploymentSpec(model="", gpu_type="", allowed_regions=())
        for name in ("min_replicas", "max_replicas", "target_concurrency", "scale_down_delay_s", "idle_timeout_s"):
            self.fields[name].required = False
            self.fields[name].default = getattr(defaults, name)
        self.fields["environment"].required = False
        self.fields["environment"].default = Deployment.Environment.DEVELOPMENT


class DeploymentUpdateSerializer(_SpecFields):
    live = serializers.BooleanField(
        default=True,
        help_text="false: save the change as a revision without going live; promote it later (POST .../promote/).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if name != "live":
                field.required = False

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not set(attrs) - {"live"}:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs


class PromoteSerializer(serializers.Serializer):
    revision = serializers.IntegerField(min_value=1)


class PlanSerializer(serializers.Serializer):
    """How a canary splits and is judged (the canary start's fields, less what it tries)."""

    traffic_percent = serializers.IntegerField(min_value=1, max_value=99, help_text="The canary's share of requests.")
    window_s = serializers.IntegerField(min_value=1, max_value=7 * 86_400, default=canaries.DEFAULT_WINDOW_S)
    min_requests = serializers.IntegerField(min_value=1, max_value=10_000_000, default=canaries.DEFAULT_MIN_REQUESTS)
    max_error_rate_increase = serializers.DecimalField(
        max_digits=5, decimal_places=4, min_value=Decimal(0), max_value=Decimal(1), default=canaries.DEFAULT_MAX_ERROR_RATE_INCREASE
    )
    max_latency_ratio = serializers.DecimalField(
        max_digits=6, decimal_places=2, min_value=Decimal(1), default=canaries.DEFAULT_MAX_LATENCY_RATIO
    )


class SpecChangesSerializer(_SpecFields):
    """Changes to a revision's settings, each optional."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["environment"]  # the deployment's, not a revision's
        for field in self.fields.values():
            field.required = False


class StagingCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=60, required=False, help_text="Its name on the gateway; default `<production>-staging`.")
    changes = SpecChangesSerializer(
        required=False, help_text="Changes to a copy of production's current revision (say, min_replicas 0), as staging's first."
    )


class PromoteToProductionSerializer(serializers.Serializer):
    keep_production_scaling = serializers.BooleanField(
        default=False, help_text="Keep production's replicas, concurrency and timeouts; promote the model, hardware and regions."
    )
    canary = PlanSerializer(
        required=False, allow_null=True, help_text="Roll out by a canary on production with this plan; absent: all at once."
    )


class CanaryStartSerializer(PlanSerializer):
    revision = serializers.IntegerField(min_value=1, required=False, help_text="An existing revision to try; or give `changes`.")
    changes = SpecChangesSerializer(required=False, help_text="Changes to the current revision; saved as the canary's revision.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("revision" in attrs) == bool(attrs.get("changes")):
            raise serializers.ValidationError({"revision": "Give either a revision number or changes, not both."})
        return attrs


class RevisionStatsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField()
    mean_latency_ms = serializers.FloatField(allow_null=True)


class CanarySerializer(serializers.ModelSerializer):
    stable_revision = serializers.IntegerField(source="stable_revision.number", read_only=True)
    canary_revision = serializers.IntegerField(source="canary_revision.number", read_only=True)
    stats = serializers.SerializerMethodField(help_text="What the gateways counted for each revision since the canary started.")
    verdict = serializers.SerializerMethodField(help_text="The automatic analysis now: wait, promote or roll_back, and why.")

    class Meta:
        model = Canary
        fields = [
            "id",
            "state",
            "stable_revision",
            "canary_revision",
            "traffic_percent",
            "window_s",
            "min_requests",
            "max_error_rate_increase",
            "max_latency_ratio",
            "started_at",
            "decided_at",
            "reason",
            "stats",
            "verdict",
        ]
        read_only_fields = fields

    @staticmethod
    def _stats_of(stats: RevisionStats) -> dict[str, Any]:
        return {
            "requests": stats.requests,
            "errors": stats.errors,
            "error_rate": stats.error_rate,
            "mean_latency_ms": stats.mean_latency_ms,
        }

    @extend_schema_field(inline_serializer("CanaryStats", {"stable": RevisionStatsSerializer(), "canary": RevisionStatsSerializer()}))
    def get_stats(self, canary: Canary) -> dict[str, Any]:
        stable, candidate = canaries.stats(canary)
        return {"stable": self._stats_of(stable), "canary": self._stats_of(candidate)}

    @extend_schema_field(
        inline_serializer("CanaryVerdict", {"action": serializers.CharField(), "reason": serializers.CharField()}, allow_null=True)
    )
    def get_verdict(self, canary: Canary) -> dict[str, str] | None:
        if not canary.active:
            return None
        verdict = canaries.analyse(canary, now=timezone.now())
        return {"action": verdict.action, "reason": verdict.reason}


class CatalogModelSerializer(serializers.ModelSerializer):
    builtin = serializers.SerializerMethodField()

    class Meta:
        model = CatalogModel
        fields = [
            "id",
            "name",
            "task",
            "source_kind",
            "source",
            "weights_format",
            "context_length",
            "embedding_dimensions",
            "license",
            "description",
            "builtin",
        ]
        read_only_fields = fields

    def get_builtin(self, entry: CatalogModel) -> bool:
        return entry.organization_id is None


class RegionClusterSerializer(serializers.Serializer):
    name = serializers.CharField()
    provider = serializers.CharField()
    status = serializers.CharField()
    simulated = serializers.BooleanField()


class RegionSerializer(serializers.Serializer):
    """A region and its clusters (deployments.selectors.regions); documents the answer."""

    region = serializers.CharField()
    clusters = RegionClusterSerializer(many=True)
