"""What a request costs, in exact decimals.

External providers carry their own prices per million input and output tokens. A
deployment's price per token derives from its GPU price and its model's throughput:

    price per million tokens = GPU price per second / tokens per second x 1,000,000

with tokens per second as measured by `manage.py bench serving` on one replica (README,
Benchmarks: 168 tokens/s for SmolLM2 chat with 16 streams; 420 texts/s of about 12 tokens
for all-MiniLM embeddings). Input and output tokens cost the same on a deployment: both
are GPU time.
"""

from __future__ import annotations

from decimal import Decimal

MEASURED_TOKENS_PER_SECOND: dict[str, Decimal] = {
    "smollm2-135m-instruct": Decimal("168"),
    "all-minilm-l6-v2": Decimal("5000"),
    # The test models run at many times these rates; pricing them like their full-size
    # siblings keeps cost figures in tests and demos realistic.
    "tiny-chat": Decimal("168"),
    "tiny-embedding": Decimal("5000"),
}
DEFAULT_TOKENS_PER_SECOND = Decimal("100")
MILLION = Decimal(1_000_000)


def deployment_price_per_mtok(gpu_price_per_hour: Decimal, model: str) -> Decimal:
    tokens_per_second = MEASURED_TOKENS_PER_SECOND.get(model, DEFAULT_TOKENS_PER_SECOND)
    return (gpu_price_per_hour / 3600 / tokens_per_second * MILLION).quantize(Decimal("0.000001"))


def cost(input_tokens: int, output_tokens: int, input_price_per_mtok: Decimal, output_price_per_mtok: Decimal) -> Decimal:
    """Exact: prices have six decimals, so the cost has at most twelve, which UsageEvent
    keeps. Nothing is rounded here; rounding happens once, on an invoice line."""
    return (input_tokens * input_price_per_mtok + output_tokens * output_price_per_mtok) / MILLION
