"""What a request costs, in exact decimals.

External providers carry their own prices per million input and output tokens, which are
charged. A deployment is billed by GPU time, never per token; for ordering targets by cost
its per-token figure is an estimate, an attribution of its GPU price to the tokens it
serves:

    price per million tokens = GPU price per second / tokens per second x 1,000,000

with tokens per second as its replicas report it for that model and GPU type, else the
catalog's benchmark figure (deployments.throughput.figure_for). Input and output tokens
cost the same on a deployment: both are GPU time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = 3600


def deployment_price_per_mtok(*, gpu_price_per_hour: Decimal, tokens_per_second: Decimal) -> Decimal:
    """The estimate routing orders a deployment by; never charged."""
    return (gpu_price_per_hour / SECONDS_PER_HOUR / tokens_per_second * MILLION).quantize(Decimal("0.000001"))


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """The price book's per-token prices in force: a price per model served (ModelPrice),
    and the markup on an external provider's cost for any other model."""

    by_model: dict[str, tuple[Decimal, Decimal]]  # model served -> input, output per million tokens
    markup: Decimal  # the multiplier on a provider's cost (1.1 for 10%)

    def charged_per_mtok(self, *, served_model: str, provider_cost_per_mtok: tuple[Decimal, Decimal]) -> tuple[Decimal, Decimal]:
        """What a token answered by `served_model` through a provider is charged: keyed on
        the model served, whatever the route the caller named is called."""
        priced = self.by_model.get(served_model)
        if priced is not None:
            return priced
        return provider_cost_per_mtok[0] * self.markup, provider_cost_per_mtok[1] * self.markup


def cost(input_tokens: int, output_tokens: int, input_price_per_mtok: Decimal, output_price_per_mtok: Decimal) -> Decimal:
    """Exact: prices have six decimals, so the cost has at most twelve, which UsageEvent
    keeps. Nothing is rounded here; rounding happens once, on an invoice line."""
    return (input_tokens * input_price_per_mtok + output_tokens * output_price_per_mtok) / MILLION
