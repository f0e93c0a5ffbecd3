"""Routing strategies: the order in which a route's targets are tried for one request.

- weighted: the first target is drawn at random in proportion to the weights (canary and
  A/B splits); the others follow by weight, as failover.
- lowest_cost: by the sum of input and output price per million tokens.
- lowest_latency: by the moving average of observed latency (time to first token for
  streams); a target not yet measured goes first, so every target gets measured.
- balanced: by latency x cost, the score being
  (latency ms + 1) x (input + output price per million tokens + 0.01);
  the constants keep a free or not-yet-measured target from scoring zero outright.
- ordered: by the targets' positions.

Targets outside the region allow-list never appear (routing.gateway.upstream filters endpoints).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

from routing.gateway.snapshot import Target
from routing.models import Strategy

TargetLatency = Callable[[Target], float | None]


_RNG = random.Random()


def order_targets(strategy: str, targets: tuple[Target, ...], latency_of: TargetLatency, rng: random.Random | None = None) -> list[Target]:
    if len(targets) <= 1:
        return list(targets)
    if strategy == Strategy.WEIGHTED:
        return _weighted(targets, rng or _RNG)
    if strategy == Strategy.LOWEST_COST:
        return sorted(targets, key=lambda t: (price(t), t.position))
    if strategy == Strategy.LOWEST_LATENCY:
        return sorted(targets, key=lambda t: (latency_of(t) or 0.0, t.position))
    if strategy == Strategy.BALANCED:
        return sorted(targets, key=lambda t: (balanced_score(latency_of(t), price(t)), t.position))
    return sorted(targets, key=lambda t: t.position)


def price(target: Target) -> Decimal:
    return target.input_price_per_mtok + target.output_price_per_mtok


def balanced_score(latency_ms: float | None, price_per_mtok: Decimal) -> float:
    return ((latency_ms or 0.0) + 1.0) * (float(price_per_mtok) + 0.01)


def _weighted(targets: tuple[Target, ...], rng: random.Random) -> list[Target]:
    weighted = [t for t in targets if t.weight > 0]
    rest = sorted((t for t in targets if t.weight <= 0), key=lambda t: t.position)
    if not weighted:
        return rest
    first = rng.choices(weighted, weights=[t.weight for t in weighted])[0]
    others = sorted((t for t in weighted if t is not first), key=lambda t: (-t.weight, t.position))
    return [first, *others, *rest]
