"""What the gateway knows about one organization, read from the database in one go and
then used, immutable, by every request until it is refreshed (routing.gateway.cache).

Reading is synchronous ORM work; the gateway runs it in a thread, never on its event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing import invoices, rating
from deployments.internal_tokens import replica_token
from deployments.models import Canary, Deployment, Quota, Replica
from deployments.models import Cluster as ClusterModel
from deployments.prices import GpuPriceBook
from deployments.services import quota_for
from deployments.throughput import Figure, figure_for, measured
from routing import pricing, secrets
from routing.gateway.spend import Cap, SpendPolicy, to_micros
from routing.models import ModelRoute, RouteTarget, Strategy
from routing.pricing import TokenPrices
from tenancy.models import ApiKey, Organization, OrgStatus

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_ATTEMPT_TIMEOUT_S = 30.0
DEFAULT_DEADLINE_S = 120.0
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_COOLDOWN_S = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One concrete upstream: a READY replica, or an external provider."""

    key: str  # identity for circuit breakers, balancing and stats
    base_url: str  # up to and including /v1
    region: str
    upstream_model: str  # the model name to send upstream: a replica's, its own revision's model
    api_key: str | None = None
    tenant_supplied: bool = False  # a provider's URL: its address is checked at every connection
    revision_id: str = ""  # a replica's: the deployment revision it runs (during a rollout, not always the current one)


@dataclass(frozen=True, slots=True)
class CanarySplit:
    """A deployment's running or held canary: the share of its requests that go to the
    canary revision's replicas; the rest go to the stable (current) revision's."""

    canary_id: str
    canary_revision_id: str
    stable_revision_id: str
    percent: int  # 1-99


@dataclass(frozen=True, slots=True)
class Target:
    id: str
    label: str
    kind: str  # "deployment" or "provider"
    weight: int
    position: int
    endpoints: tuple[Endpoint, ...]
    # A provider's prices, charged per token. For a deployment, an estimate (an attribution
    # of its GPU price to tokens) from its GPU price and the throughput of its model on its
    # GPU type, used only to order targets by cost: a deployment is billed by GPU time
    # (gpu_price_per_hour), never per token.
    input_price_per_mtok: Decimal
    output_price_per_mtok: Decimal
    regions: frozenset[str]  # where this target may run at all
    # A provider's own price per million tokens (what usage events record; the prices above
    # are what is charged: routing.pricing.TokenPrices).
    input_cost_per_mtok: Decimal = Decimal(0)
    output_cost_per_mtok: Decimal = Decimal(0)
    deployment_id: str = ""
    can_wake: bool = False  # a deployment scaled to zero: a request may start a replica
    gpu_price_per_hour: Decimal | None = None  # a deployment's price per replica-hour (deployments.prices)
    throughput: Figure | None = None  # a deployment's: the tokens per second its estimate assumes, and their source
    canary: CanarySplit | None = None  # a deployment's canary, while it runs or is held


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    strategy: str
    allowed_regions: frozenset[str] | None  # None: any region
    fallbacks: tuple[str, ...]
    max_attempts: int
    attempt_timeout_s: float
    deadline_s: float
    breaker_failures: int
    breaker_cooldown_s: float
    targets: tuple[Target, ...]
    created: int  # epoch seconds, for /v1/models
    is_deployment: bool = False  # the implicit route of a deployment's own name

    @property
    def public_name(self) -> str:
        return "" if self.is_deployment else self.name


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int
    tokens_per_minute: int
    concurrent_requests: int
    key_requests_per_minute: int | None
    key_tokens_per_minute: int | None
    key_concurrent_requests: int | None


@dataclass(frozen=True, slots=True)
class OrgSnapshot:
    org_id: str
    status: str
    status_reason: str
    limits: Limits
    routes: dict[str, Route]
    loaded_at: float
    spend: SpendPolicy | None = None  # None: no monthly limit

    @property
    def suspended(self) -> bool:
        return self.status == OrgStatus.SUSPENDED

    def resolve(self, model: str) -> Route | None:
        return self.routes.get(model)

    def chain(self, route: Route) -> list[Route]:
        """The route, then its fallback routes that exist, each once."""
        chain = [route]
        for name in route.fallbacks:
            fallback = self.routes.get(name)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        return chain


def load_snapshot(org_id: str) -> OrgSnapshot:
    org = Organization.objects.get(pk=org_id)
    quota: Quota = quota_for(org)
    limits = Limits(
        requests_per_minute=quota.requests_per_minute,
        tokens_per_minute=quota.tokens_per_minute,
        concurrent_requests=quota.concurrent_requests,
        key_requests_per_minute=quota.key_requests_per_minute,
        key_tokens_per_minute=quota.key_tokens_per_minute,
        key_concurrent_requests=quota.key_concurrent_requests,
    )
    deployments = {d.pk: d for d in Deployment.objects.for_org(org).filter(deleted_at=None).select_related("current_revision")}
    ready = (
        Replica.objects.for_org(org)
        .filter(deployment_id__in=list(deployments), state=Replica.State.READY)
        .exclude(endpoint="")
        .exclude(cluster__status=ClusterModel.Status.DOWN)
        .select_related("cluster", "revision")
        .order_by("created_at")
    )
    replicas_by_deployment: dict[str, list[Replica]] = {}
    for replica in ready:
        replicas_by_deployment.setdefault(replica.deployment_id, []).append(replica)
    book = rating.PriceBook.load(org)
    gpu_prices, token_prices = book.gpu_prices, _token_prices(book, timezone.now())
    throughputs = measured()
    splits = {
        canary.deployment_id: CanarySplit(
            canary_id=canary.pk,
            canary_revision_id=canary.canary_revision_id,
            stable_revision_id=canary.stable_revision_id,
            percent=canary.traffic_percent,
        )
        for canary in Canary.objects.for_org(org).filter(state__in=Canary.ACTIVE_STATES, deployment_id__in=list(deployments))
        if canary.stable_revision_id == deployments[canary.deployment_id].current_revision_id
    }
    deployment_targets = {
        pk: _deployment_target(d, replicas_by_deployment.get(pk, []), gpu_prices, throughputs, splits.get(pk))
        for pk, d in deployments.items()
        if d.current_revision_id
    }

    routes: dict[str, Route] = {}
    for deployment in deployments.values():
        target = deployment_targets.get(deployment.pk)
        if target is not None:
            routes[deployment.name] = Route(
                name=deployment.name,
                strategy=Strategy.ORDERED,
                allowed_regions=None,
                fallbacks=(),
                max_attempts=DEFAULT_MAX_ATTEMPTS,
                attempt_timeout_s=DEFAULT_ATTEMPT_TIMEOUT_S,
                deadline_s=DEFAULT_DEADLINE_S,
                breaker_failures=DEFAULT_BREAKER_FAILURES,
                breaker_cooldown_s=DEFAULT_BREAKER_COOLDOWN_S,
                targets=(target,),
                created=int(deployment.created_at.timestamp()),
                is_deployment=True,
            )
    targets_by_route: dict[str, list[RouteTarget]] = {}
    for row in RouteTarget.objects.for_org(org).select_related("provider"):
        targets_by_route.setdefault(row.route_id, []).append(row)
    # Routes are named by the organization and win over a deployment of the same name.
    for route in ModelRoute.objects.for_org(org):
        targets = []
        for row in targets_by_route.get(route.pk, []):
            if row.deployment_id:
                base = deployment_targets.get(row.deployment_id)
                if base is None:
                    continue  # deleted deployment
                targets.append(_with_route_fields(base, row))
            else:
                targets.append(_provider_target(row, token_prices))
        routes[route.name] = Route(
            name=route.name,
            strategy=route.strategy,
            allowed_regions=frozenset(route.allowed_regions) if route.allowed_regions else None,
            fallbacks=tuple(route.fallbacks),
            max_attempts=route.max_attempts,
            attempt_timeout_s=route.attempt_timeout_s,
            deadline_s=route.deadline_s,
            breaker_failures=route.breaker_failures,
            breaker_cooldown_s=route.breaker_cooldown_s,
            targets=tuple(sorted(targets, key=lambda t: t.position)),
            created=int(route.created_at.timestamp()),
        )
    return OrgSnapshot(
        org_id=org.pk,
        status=org.status,
        status_reason=org.status_reason,
        limits=limits,
        routes=routes,
        loaded_at=time.monotonic(),
        spend=_spend_policy(org, book),
    )


def _token_prices(book: rating.PriceBook, now: datetime) -> TokenPrices:
    current = {model: versions.at(now) for model, versions in book.model_prices.items()}
    return TokenPrices(
        by_model={
            model: (price.input_price_per_mtok, price.output_price_per_mtok) for model, price in current.items() if price is not None
        },
        markup=1 + (book.markup.at(now) or Decimal(0)) / 100,
    )


def _spend_policy(org: Organization, book: rating.PriceBook) -> SpendPolicy | None:
    """The organization's monthly limit and its keys' and routes' budgets, each with the
    month's spend so far, and today's prices; rated only where there is a limit."""
    limit = invoices.spend_limit(org)
    lineages = _budget_lineages(org)
    budgeted_routes = list(ModelRoute.objects.for_org(org).exclude(monthly_budget=None).only("pk", "name", "monthly_budget"))
    if limit is None and not lineages and not budgeted_routes:
        return None
    now = timezone.now()
    organization = None
    if limit is not None:
        organization = Cap(
            scope=org.pk,
            limit_micros=to_micros(limit.amount),
            spent_micros=to_micros(rating.month_to_date(org, now, exact=True, book=book), up=True),
            refusal=f"This organization has reached its {limit.reason} for this month. New requests are refused until "
            f"it is lifted: {limit.lifted_by}.",
        )
    keys = {}
    for first, (budget, members) in lineages.items():
        cap = Cap(
            scope=f"key:{first}",  # one budget for a key and the keys it replaced
            limit_micros=to_micros(budget),
            spent_micros=to_micros(rating.keys_month_to_date(org, members, now, book=book), up=True),
            refusal=f"This API key has reached its monthly budget of ${budget}. An admin can raise or remove it "
            "(API keys page, or PATCH /api/v1/keys/{id}/); the organization's other keys are not affected.",
            code="key_budget_reached",
        )
        keys.update(dict.fromkeys(members, cap))
    routes = {}
    for route in budgeted_routes:
        budget = route.monthly_budget
        assert budget is not None
        routes[route.name] = Cap(
            scope=f"route:{route.pk}",
            limit_micros=to_micros(budget),
            spent_micros=to_micros(rating.route_month_to_date(org, route.name, now, book=book), up=True),
            refusal=f"The route {route.name} has reached its monthly budget of ${budget}. New requests to it are refused until "
            "the month ends or the budget is lifted: an admin of the organization can raise or remove it in the console "
            f"(Routing) or the management API (PUT /api/v1/routes/{route.pk}/). The organization's other routes are not affected.",
            code="route_budget_reached",
        )
    return SpendPolicy(
        organization=organization,
        keys=keys,
        routes=routes,
    )


def _budget_lineages(org: Organization) -> dict[str, tuple[Decimal, list[str]]]:
    """Keys with a budget, by rotation line: the line's first key -> (the newest live key's
    budget, every key of the line). Rotation copies the budget, and the line shares one
    month's spend, so rotating a key never resets it."""
    rows = list(
        ApiKey.objects.filter(organization=org).order_by("created_at").values_list("pk", "rotated_from_id", "monthly_budget", "revoked_at")
    )
    parent = {pk: rotated_from for pk, rotated_from, _, _ in rows}

    def first_of(pk: str) -> str:
        for _ in range(len(parent)):  # bounded: a line cannot be longer than the keys
            if parent.get(pk) is None:
                break
            pk = parent[pk]  # type: ignore[assignment]
        return pk

    lines: dict[str, list[str]] = {}
    for pk in parent:
        lines.setdefault(first_of(pk), []).append(pk)
    budgets = {first_of(pk): budget for pk, _, budget, revoked_at in rows if revoked_at is None and budget is not None}
    return {first: (budget, lines[first]) for first, budget in budgets.items()}


def _deployment_target(
    deployment: Deployment,
    replicas: list[Replica],
    gpu_prices: GpuPriceBook,
    throughputs: dict[tuple[str, str], Decimal],
    canary: CanarySplit | None = None,
) -> Target:
    revision = deployment.current_revision
    assert revision is not None
    # During a rollout or a rollback the READY replicas of the revision being replaced keep
    # serving until they drain: each is sent the model its own revision names, which is
    # the one it loaded (a model-changing revision's old replicas answer 404 to the new name).
    endpoints = tuple(
        Endpoint(
            key=f"replica:{r.pk}",
            base_url=r.endpoint.rstrip("/") + "/v1",
            region=r.cluster.region,
            upstream_model=r.revision.model,
            api_key=replica_token(r.pk),  # each replica answers only its own token
            revision_id=r.revision_id,
        )
        for r in replicas
    )
    rate = gpu_prices.at(revision.gpu_type_id, timezone.now())
    price_per_hour = rate.price_per_hour if rate is not None else Decimal(0)
    throughput = figure_for(model=revision.model, gpu_type=revision.gpu_type_id, measured=throughputs)
    per_mtok = pricing.deployment_price_per_mtok(gpu_price_per_hour=price_per_hour, tokens_per_second=throughput.tokens_per_second)
    return Target(
        id=deployment.pk,
        label=f"deployment:{deployment.name}",
        kind="deployment",
        weight=100,
        position=0,
        endpoints=endpoints,
        input_price_per_mtok=per_mtok,
        output_price_per_mtok=per_mtok,
        regions=frozenset(revision.allowed_regions) if revision.allowed_regions else frozenset(),
        deployment_id=deployment.pk,
        can_wake=revision.min_replicas == 0,
        gpu_price_per_hour=price_per_hour,
        throughput=throughput,
        canary=canary,
    )


def _with_route_fields(base: Target, row: RouteTarget) -> Target:
    return Target(
        id=row.pk,
        label=base.label,
        kind=base.kind,
        weight=row.weight,
        position=row.position,
        endpoints=base.endpoints,
        input_price_per_mtok=base.input_price_per_mtok,
        output_price_per_mtok=base.output_price_per_mtok,
        regions=base.regions,
        deployment_id=base.deployment_id,
        can_wake=base.can_wake,
        gpu_price_per_hour=base.gpu_price_per_hour,
        throughput=base.throughput,
        canary=base.canary,
    )


def _provider_target(row: RouteTarget, token_prices: TokenPrices) -> Target:
    provider = row.provider
    assert provider is not None
    endpoint = Endpoint(
        key=f"provider:{provider.pk}:{row.provider_model}",
        base_url=provider.base_url.rstrip("/"),
        region=provider.region,
        upstream_model=row.provider_model,
        api_key=secrets.decrypt(provider.api_key_encrypted),
        tenant_supplied=True,
    )
    charged = token_prices.charged_per_mtok(
        served_model=row.provider_model, provider_cost_per_mtok=(provider.input_price_per_mtok, provider.output_price_per_mtok)
    )
    return Target(
        id=row.pk,
        label=f"provider:{provider.name}/{row.provider_model}",
        kind="provider",
        weight=row.weight,
        position=row.position,
        endpoints=(endpoint,),
        input_price_per_mtok=charged[0],
        output_price_per_mtok=charged[1],
        input_cost_per_mtok=provider.input_price_per_mtok,
        output_cost_per_mtok=provider.output_price_per_mtok,
        regions=frozenset({provider.region}),
    )
