"""Model routes and external providers: create, change, delete. Each change writes one
audit entry in the same transaction. Members and above edit routes; providers hold
credentials, so admins and owners manage them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError

from deployments.models import Cluster, Deployment
from routing import secrets
from routing.models import MODEL_NAME_PATTERN, ExternalProvider, ModelRoute, RouteTarget, Strategy
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.decimals import plain
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Role
from tenancy.network import refusal as outbound_refusal
from tenancy.text import has_control_characters

PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")
MAX_TARGETS = 20
MAX_FALLBACKS = 5
REGION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")  # it travels in the x-switchboard-region header


@dataclass(frozen=True)
class TargetSpec:
    deployment_id: str = ""
    provider_id: str = ""
    provider_model: str = ""
    weight: int = 100


class Unchanged(Enum):
    """A route's budget left as it is: members edit routes but do not see money."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED
MAX_BUDGET = Decimal("1e12")


@dataclass(frozen=True)
class RouteSpec:
    name: str
    targets: tuple[TargetSpec, ...]
    strategy: str = Strategy.WEIGHTED
    allowed_regions: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    max_attempts: int = 3
    attempt_timeout_s: float = 30.0
    deadline_s: float = 120.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    # USD a month of per-token charges; None: no budget; UNCHANGED: as it is (none for a
    # new route). Setting it takes an admin.
    monthly_budget: Decimal | None | Unchanged = UNCHANGED


# ---------------------------------------------------------------------------------------
# Providers


def provider_snapshot(provider: ExternalProvider) -> dict[str, Any]:
    return {
        "name": provider.name,
        "base_url": provider.base_url,
        "region": provider.region,
        "api_key": f"...{provider.api_key_last4}" if provider.api_key_last4 else "",
        "input_price_per_mtok": plain(provider.input_price_per_mtok),
        "output_price_per_mtok": plain(provider.output_price_per_mtok),
    }


def _validate_provider(name: str, base_url: str, region: str, input_price: Decimal, output_price: Decimal) -> None:
    if not PROVIDER_NAME.match(name):
        raise ServiceError("Use 1-60 lowercase letters, digits and dashes, starting with a letter or digit.", field="name")
    problem = outbound_refusal(base_url, settings.OUTBOUND_POLICY)
    if problem:
        raise ServiceError(f"The provider's API root: {problem}", field="base_url")
    if not REGION_PATTERN.match(region):
        raise ServiceError(
            "Name the region the provider processes requests in: up to 40 letters, digits, dots, dashes or underscores.", field="region"
        )
    for label, price in (("input_price_per_mtok", input_price), ("output_price_per_mtok", output_price)):
        if price < 0 or price >= Decimal("100000000") or price != price.quantize(Decimal("0.000001")):
            raise ServiceError("Prices are per million tokens: zero or more, at most six decimals.", field=label)


def _validate_api_key(api_key: str) -> None:
    if any(ord(char) < 32 or ord(char) == 127 for char in api_key) or len(api_key) > 500:
        raise ServiceError("An API key is up to 500 printable characters, without line breaks.", field="api_key")


def _price(value: object, field_name: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ServiceError("Give the price as a decimal number of dollars per million tokens.", field=field_name) from None


@transaction.atomic
def create_provider(
    ctx: OrgContext, *, name: str, base_url: str, region: str, api_key: str, input_price_per_mtok: object, output_price_per_mtok: object
) -> ExternalProvider:
    ctx.require_role(Role.ADMIN, "manage external providers")
    input_price, output_price = _price(input_price_per_mtok, "input_price_per_mtok"), _price(output_price_per_mtok, "output_price_per_mtok")
    _validate_provider(name, base_url, region, input_price, output_price)
    _validate_api_key(api_key)
    if ExternalProvider.objects.for_org(ctx.organization).filter(name=name).exists():
        raise Conflict(f"A provider named {name!r} already exists.", field="name")
    provider = ExternalProvider.objects.create(
        organization=ctx.organization,
        name=name,
        base_url=base_url.rstrip("/"),
        region=region,
        api_key_encrypted=secrets.encrypt(api_key) if api_key else "",
        api_key_last4=api_key[-4:] if api_key else "",
        input_price_per_mtok=input_price,
        output_price_per_mtok=output_price,
    )
    audit.record(ctx, "provider.created", target_type="provider", target_id=provider.pk, after=provider_snapshot(provider))
    return provider


@transaction.atomic
def update_provider(ctx: OrgContext, provider: ExternalProvider, **changes: Any) -> ExternalProvider:
    """Changes the given fields. An `api_key` of None or "" keeps the stored key (it is
    write-only: forms and the API never show it back)."""
    ctx.require_role(Role.ADMIN, "manage external providers")
    provider = ExternalProvider.objects.for_org(ctx.organization).select_for_update().get(pk=provider.pk)
    before = provider_snapshot(provider)
    name = changes.get("name", provider.name)
    base_url = changes.get("base_url", provider.base_url)
    region = changes.get("region", provider.region)
    input_price = _price(changes.get("input_price_per_mtok", provider.input_price_per_mtok), "input_price_per_mtok")
    output_price = _price(changes.get("output_price_per_mtok", provider.output_price_per_mtok), "output_price_per_mtok")
    _validate_provider(name, base_url, region, input_price, output_price)
    if name != provider.name and ExternalProvider.objects.for_org(ctx.organization).filter(name=name).exists():
        raise Conflict(f"A provider named {name!r} already exists.", field="name")
    provider.name, provider.base_url, provider.region = name, base_url.rstrip("/"), region
    provider.input_price_per_mtok, provider.output_price_per_mtok = input_price, output_price
    api_key = changes.get("api_key")
    if api_key:
        _validate_api_key(api_key)
        provider.api_key_encrypted, provider.api_key_last4 = secrets.encrypt(api_key), api_key[-4:]
    provider.save()
    audit.record(ctx, "provider.updated", target_type="provider", target_id=provider.pk, before=before, after=provider_snapshot(provider))
    return provider


@transaction.atomic
def delete_provider(ctx: OrgContext, provider: ExternalProvider) -> None:
    ctx.require_role(Role.ADMIN, "manage external providers")
    before = provider_snapshot(provider)
    try:
        ExternalProvider.objects.for_org(ctx.organization).filter(pk=provider.pk).delete()
    except ProtectedError:
        routes = sorted(set(RouteTarget.objects.for_org(ctx.organization).filter(provider=provider).values_list("route__name", flat=True)))
        raise Conflict(f"Routes still send traffic to this provider ({', '.join(routes)}); remove it from them first.") from None
    audit.record(ctx, "provider.deleted", target_type="provider", target_id=provider.pk, before=before)


# ---------------------------------------------------------------------------------------
# Routes


def route_snapshot(route: ModelRoute) -> dict[str, Any]:
    return {
        "name": route.name,
        "strategy": route.strategy,
        "allowed_regions": list(route.allowed_regions),
        "fallbacks": list(route.fallbacks),
        "max_attempts": route.max_attempts,
        "attempt_timeout_s": route.attempt_timeout_s,
        "deadline_s": route.deadline_s,
        "breaker_failures": route.breaker_failures,
        "breaker_cooldown_s": route.breaker_cooldown_s,
        "monthly_budget": plain(route.monthly_budget) if route.monthly_budget is not None else None,
        "targets": [
            {
                "deployment": t.deployment_id or None,
                "provider": t.provider_id or None,
                "provider_model": t.provider_model,
                "weight": t.weight,
            }
            for t in RouteTarget.objects.for_org(route.organization).filter(route=route).order_by("position")
        ],
    }


def known_regions(ctx: OrgContext) -> set[str]:
    regions = set(Cluster.objects.values_list("region", flat=True))
    regions |= set(ExternalProvider.objects.for_org(ctx.organization).values_list("region", flat=True))
    return regions


def _validate_route(ctx: OrgContext, spec: RouteSpec, existing: ModelRoute | None) -> None:
    _validate_budget(ctx, spec.monthly_budget)
    _validate_route_name(ctx, spec, existing)
    _validate_route_policy(ctx, spec)
    _validate_fallbacks(ctx, spec)
    _validate_targets(spec)


def _validate_budget(ctx: OrgContext, budget: Decimal | None | Unchanged) -> None:
    if budget is UNCHANGED:
        return
    ctx.require_role(Role.ADMIN, "set a route's monthly budget")
    if budget is not None and (
        not isinstance(budget, Decimal)
        or not budget.is_finite()
        or budget < 0
        or budget >= MAX_BUDGET
        or budget != budget.quantize(Decimal("0.01"))
    ):
        raise ServiceError(
            "A route's monthly budget is in dollars: zero or more, with at most two decimals (e.g. 25.00); leave it empty for none.",
            field="monthly_budget",
        )


def _validate_route_name(ctx: OrgContext, spec: RouteSpec, existing: ModelRoute | None) -> None:
    if not re.match(MODEL_NAME_PATTERN, spec.name):
        raise ServiceError("Use letters, digits and . _ - : / (up to 100 characters), starting with a letter or digit.", field="name")
    clash = ModelRoute.objects.for_org(ctx.organization).filter(name=spec.name)
    if existing is not None:
        clash = clash.exclude(pk=existing.pk)
    if clash.exists():
        raise Conflict(f"A route named {spec.name!r} already exists.", field="name")


def _validate_route_policy(ctx: OrgContext, spec: RouteSpec) -> None:
    if spec.strategy not in Strategy.values:
        raise ServiceError(f"Unknown strategy {spec.strategy!r}; choose one of {', '.join(Strategy.values)}.", field="strategy")
    regions = known_regions(ctx)
    unknown = [region for region in spec.allowed_regions if region not in regions]
    if unknown:
        raise ServiceError(
            f"Unknown region(s) {', '.join(unknown)}; known regions are {', '.join(sorted(regions))}.", field="allowed_regions"
        )
    _check_range(spec.max_attempts, 1, 10, "max_attempts")
    _check_range(spec.attempt_timeout_s, 0.1, 600, "attempt_timeout_s")
    _check_range(spec.deadline_s, 0.1, 3600, "deadline_s")
    _check_range(spec.breaker_failures, 1, 100, "breaker_failures")
    _check_range(spec.breaker_cooldown_s, 0.1, 3600, "breaker_cooldown_s")
    if spec.attempt_timeout_s > spec.deadline_s:
        raise ServiceError("The attempt timeout cannot be longer than the total deadline.", field="attempt_timeout_s")


def _validate_fallbacks(ctx: OrgContext, spec: RouteSpec) -> None:
    if len(spec.fallbacks) > MAX_FALLBACKS or len(set(spec.fallbacks)) != len(spec.fallbacks):
        raise ServiceError(f"List up to {MAX_FALLBACKS} different fallback routes.", field="fallbacks")
    if spec.name in spec.fallbacks:
        raise ServiceError("A route cannot fall back to itself.", field="fallbacks")
    routes = set(ModelRoute.objects.for_org(ctx.organization).values_list("name", flat=True))
    deployments = set(Deployment.objects.for_org(ctx.organization).filter(deleted_at=None).values_list("name", flat=True))
    missing = [name for name in spec.fallbacks if name not in routes | deployments]
    if missing:
        raise ServiceError(f"Fallback(s) {', '.join(missing)} name no route or deployment of this organization.", field="fallbacks")


def _validate_targets(spec: RouteSpec) -> None:
    if not spec.targets:
        raise ServiceError("A route needs at least one target: a deployment or a provider's model.", field="targets")
    if len(spec.targets) > MAX_TARGETS:
        raise ServiceError(f"A route has at most {MAX_TARGETS} targets.", field="targets")
    for target in spec.targets:
        if bool(target.deployment_id) == bool(target.provider_id):
            raise ServiceError("Each target names either a deployment or a provider, not both.", field="targets")
        if target.provider_id and not target.provider_model.strip():
            raise ServiceError("A provider target needs the provider's model name.", field="targets")
        if has_control_characters(target.provider_model):
            raise ServiceError("A provider's model name cannot contain line breaks, tabs or other control characters.", field="targets")
        if len(target.provider_model) > 200:
            raise ServiceError("Provider model names are at most 200 characters.", field="targets")
        _check_range(target.weight, 0, 10_000, "targets")
    if spec.strategy == Strategy.WEIGHTED and sum(t.weight for t in spec.targets) <= 0:
        raise ServiceError("A weighted route needs at least one target with a weight above zero.", field="targets")


def _check_range(value: float, low: float, high: float, field_name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ServiceError(f"Must be a number from {low:g} to {high:g}.", field=field_name)


def _replace_targets(ctx: OrgContext, route: ModelRoute, targets: tuple[TargetSpec, ...]) -> None:
    deployments = {
        d.pk: d
        for d in Deployment.objects.for_org(ctx.organization).filter(
            deleted_at=None, pk__in=[t.deployment_id for t in targets if t.deployment_id]
        )
    }
    providers = {
        p.pk: p for p in ExternalProvider.objects.for_org(ctx.organization).filter(pk__in=[t.provider_id for t in targets if t.provider_id])
    }
    rows = []
    for position, target in enumerate(targets):
        if target.deployment_id and target.deployment_id not in deployments:
            raise ServiceError(f"No deployment {target.deployment_id!r} in this organization.", field="targets")
        if target.provider_id and target.provider_id not in providers:
            raise ServiceError(f"No provider {target.provider_id!r} in this organization.", field="targets")
        rows.append(
            RouteTarget(
                organization=ctx.organization,
                route=route,
                deployment=deployments.get(target.deployment_id),
                provider=providers.get(target.provider_id),
                provider_model=target.provider_model.strip() if target.provider_id else "",
                weight=target.weight,
                position=position,
            )
        )
    RouteTarget.objects.for_org(ctx.organization).filter(route=route).delete()
    RouteTarget.objects.bulk_create(rows)


def _apply(route: ModelRoute, spec: RouteSpec) -> None:
    route.name = spec.name
    route.strategy = spec.strategy
    route.allowed_regions = sorted(set(spec.allowed_regions))
    route.fallbacks = list(spec.fallbacks)
    route.max_attempts = spec.max_attempts
    route.attempt_timeout_s = float(spec.attempt_timeout_s)
    route.deadline_s = float(spec.deadline_s)
    route.breaker_failures = spec.breaker_failures
    route.breaker_cooldown_s = float(spec.breaker_cooldown_s)
    if spec.monthly_budget is not UNCHANGED:
        route.monthly_budget = spec.monthly_budget


@transaction.atomic
def create_route(ctx: OrgContext, spec: RouteSpec) -> ModelRoute:
    ctx.require_role(Role.MEMBER, "edit model routes")
    _validate_route(ctx, spec, None)
    route = ModelRoute(organization=ctx.organization)
    _apply(route, spec)
    route.save()
    _replace_targets(ctx, route, spec.targets)
    audit.record(ctx, "route.created", target_type="route", target_id=route.pk, after=route_snapshot(route))
    return route


@transaction.atomic
def update_route(ctx: OrgContext, route: ModelRoute, spec: RouteSpec) -> ModelRoute:
    ctx.require_role(Role.MEMBER, "edit model routes")
    route = ModelRoute.objects.for_org(ctx.organization).select_for_update().get(pk=route.pk)
    _validate_route(ctx, spec, route)
    before = route_snapshot(route)
    old_name = route.name
    _apply(route, spec)
    route.save()
    _replace_targets(ctx, route, spec.targets)
    if old_name != route.name:
        # Keep other routes' fallback chains pointing at this route.
        for other in ModelRoute.objects.for_org(ctx.organization).exclude(pk=route.pk):
            if old_name in other.fallbacks:
                other.fallbacks = [route.name if name == old_name else name for name in other.fallbacks]
                other.save(update_fields=["fallbacks", "updated_at"])
    audit.record(ctx, "route.updated", target_type="route", target_id=route.pk, before=before, after=route_snapshot(route))
    return route


@transaction.atomic
def delete_route(ctx: OrgContext, route: ModelRoute) -> None:
    ctx.require_role(Role.MEMBER, "edit model routes")
    dependents = sorted(
        other.name for other in ModelRoute.objects.for_org(ctx.organization).exclude(pk=route.pk) if route.name in other.fallbacks
    )
    if dependents:
        raise Conflict(f"Routes {', '.join(dependents)} fall back to this route; change them first.")
    before = route_snapshot(route)
    ModelRoute.objects.for_org(ctx.organization).filter(pk=route.pk).delete()
    audit.record(ctx, "route.deleted", target_type="route", target_id=route.pk, before=before)
