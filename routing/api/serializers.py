from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from routing import services
from routing.models import ExternalProvider, ModelRoute, RouteTarget, Strategy


class ProviderSerializer(serializers.ModelSerializer):
    api_key = serializers.SerializerMethodField(help_text="Write-only: only the last four characters are ever shown.")

    class Meta:
        model = ExternalProvider
        fields = [
            "id",
            "name",
            "base_url",
            "region",
            "api_key",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_api_key(self, provider: ExternalProvider) -> str:
        return f"...{provider.api_key_last4}" if provider.api_key_last4 else ""


class ProviderWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=60)
    base_url = serializers.URLField(max_length=300)
    region = serializers.CharField(max_length=40)
    api_key = serializers.CharField(max_length=500, required=False, allow_blank=True, write_only=True, default="")
    input_price_per_mtok = serializers.DecimalField(max_digits=14, decimal_places=6, min_value=0)
    output_price_per_mtok = serializers.DecimalField(max_digits=14, decimal_places=6, min_value=0)


class ProviderUpdateSerializer(ProviderWriteSerializer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class TargetSerializer(serializers.ModelSerializer):
    deployment = serializers.CharField(source="deployment_id", allow_null=True, read_only=True)
    provider = serializers.CharField(source="provider_id", allow_null=True, read_only=True)
    label = serializers.CharField(read_only=True)

    class Meta:
        model = RouteTarget
        fields = ["id", "deployment", "provider", "provider_model", "weight", "label"]
        read_only_fields = fields


BUDGET_HELP = (
    "USD a month of the per-token charges of requests made through this route's name; past it the route answers 402 "
    "route_budget_reached. Requests a dedicated deployment serves bill GPU time, not per route, and count nothing here."
)


class RouteSerializer(serializers.ModelSerializer):
    targets = serializers.SerializerMethodField()
    # Not required in the schema: only roles that see money get it (an output-only
    # serializer, so "not read-only" changes nothing but that).
    monthly_budget = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        allow_null=True,
        help_text=BUDGET_HELP + " Only for admins, owners and keys that may write.",
    )

    class Meta:
        model = ModelRoute
        fields = [
            "id",
            "name",
            "strategy",
            "allowed_regions",
            "fallbacks",
            "max_attempts",
            "attempt_timeout_s",
            "deadline_s",
            "breaker_failures",
            "breaker_cooldown_s",
            "monthly_budget",
            "targets",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [name for name in fields if name != "monthly_budget"]

    def to_representation(self, instance: ModelRoute) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        ctx = self.context.get("ctx")
        if ctx is None or not ctx.role.sees_money:
            data.pop("monthly_budget", None)  # money, for the roles that may see it
        return data

    def get_targets(self, route: ModelRoute) -> list[dict[str, Any]]:
        rows = (
            RouteTarget.objects.for_org(route.organization)
            .filter(route=route)
            .select_related("deployment", "provider")
            .order_by("position")
        )
        return TargetSerializer(rows, many=True).data  # type: ignore[return-value]


class TargetWriteSerializer(serializers.Serializer):
    deployment = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    provider = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    provider_model = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    weight = serializers.IntegerField(min_value=0, max_value=10_000, default=100)


class RouteWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    strategy = serializers.ChoiceField(choices=Strategy.choices, default=Strategy.WEIGHTED)
    allowed_regions = serializers.ListField(child=serializers.CharField(max_length=40), max_length=20, default=list)
    fallbacks = serializers.ListField(child=serializers.CharField(max_length=100), max_length=services.MAX_FALLBACKS, default=list)
    max_attempts = serializers.IntegerField(min_value=1, max_value=10, default=3)
    attempt_timeout_s = serializers.FloatField(min_value=0.1, max_value=600, default=30.0)
    deadline_s = serializers.FloatField(min_value=0.1, max_value=3600, default=120.0)
    breaker_failures = serializers.IntegerField(min_value=1, max_value=100, default=5)
    breaker_cooldown_s = serializers.FloatField(min_value=0.1, max_value=3600, default=10.0)
    targets = TargetWriteSerializer(many=True, allow_empty=False, max_length=services.MAX_TARGETS)
    monthly_budget = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=Decimal(0),
        required=False,
        allow_null=True,
        help_text=BUDGET_HELP + " null: none; left out: unchanged. Setting it takes an admin.",
    )


def route_spec(data: dict[str, Any]) -> services.RouteSpec:
    targets = tuple(
        services.TargetSpec(
            deployment_id=t["deployment"], provider_id=t["provider"], provider_model=t["provider_model"], weight=t["weight"]
        )
        for t in data["targets"]
    )
    return services.RouteSpec(
        name=data["name"],
        targets=targets,
        strategy=data["strategy"],
        allowed_regions=tuple(data["allowed_regions"]),
        fallbacks=tuple(data["fallbacks"]),
        max_attempts=data["max_attempts"],
        attempt_timeout_s=data["attempt_timeout_s"],
        deadline_s=data["deadline_s"],
        breaker_failures=data["breaker_failures"],
        breaker_cooldown_s=data["breaker_cooldown_s"],
        monthly_budget=data.get("monthly_budget", services.UNCHANGED),
    )
