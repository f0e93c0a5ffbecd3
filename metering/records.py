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
