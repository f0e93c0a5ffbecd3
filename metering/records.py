"""The usage event as the gateway hands it over: one per request whose key was known."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    organization_id: str
    at: datetime
    key_id: str
    endpoint: str
    model: str
    route: str
    target: str
    deployment_id: str
    region: str
    status: int
    error_code: str
    streamed: bool
    attempts: int
    input_tokens: int
    output_tokens: int
    latency_ms: float
    ttft_ms: float | None
    cost: Decimal
    served_model: str = ""  # what answered; events of an earlier version lack it
    # What the request was charged, as its x-switchboard-cost-usd header said: the tokens at
    # the price book's price for the model served (or the provider's cost with the markup);
    # 0 for a dedicated deployment, billed by GPU time. `cost` is the provider's own cost,
    # which rating marks up. None on events of an earlier version: their cost is shown.
    charge: Decimal | None = None
