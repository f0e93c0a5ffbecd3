"""Prometheus metrics of the gateway, per organization, route and target.

Labels carry ids and names only, never prompt or completion text. Labelled children are
cached per (org, route, target) so a request costs dictionary lookups, not label parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

registry = CollectorRegistry(auto_describe=True)
_LABELS = ("organization", "route", "target")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("switchboard_gateway_requests", "Requests by final status.", [*_LABELS, "status"], registry=registry)
TOKENS = Counter("switchboard_gateway_tokens", "Tokens by direction (input, output).", [*_LABELS, "direction"], registry=registry)
COST = Counter("switchboard_gateway_cost_usd", "Cost at the route's prices, USD.", _LABELS, registry=registry)
LATENCY = Histogram(
    "switchboard_gateway_latency_seconds", "Time from request to last byte.", _LABELS, buckets=_LATENCY_BUCKETS, registry=registry
)
TTFT = Histogram(
    "switchboard_gateway_ttft_seconds", "Time to first token, streams only.", _LABELS, buckets=_LATENCY_BUCKETS, registry=registry
)
UPSTREAM_ERRORS = Counter("switchboard_gateway_upstream_errors", "Failed upstream attempts by kind.", [*_LABELS, "kind"], registry=registry)
RETRIES = Counter("switchboard_gateway_retries", "Attempts after the first.", ["organization", "route"], registry=registry)
BREAKER = Gauge(
    "switchboard_gateway_circuit_state", "Circuit breaker per endpoint: 0 closed, 1 half open, 2 open.", ["endpoint"], registry=registry
)
RATE_LIMITED = Counter("switchboard_gateway_rate_limited", "Requests refused by a limit.", ["organization", "limit"], registry=registry)
SPEND_REFUSED = Counter(
    "switchboard_gateway_spend_refused",
    "Requests refused with 402: the monthly spend limit is reached.",
    ["organization"],
    registry=registry,
)
USAGE_LOST = Counter(
    "switchboard_gateway_usage_unrecorded",
    "Answers whose usage event could not be made durable (disk full, and Redis down).",
    registry=registry,
)
IN_FLIGHT = Gauge("switchboard_gateway_in_flight", "Requests being served.", registry=registry)

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(slots=True)
class TargetSeries:
    requests: dict[int, Counter]
    input_tokens: Counter
    output_tokens: Counter
    cost: Counter
    latency: Histogram
    ttft: Histogram
    labels: tuple[str, str, str]

    def status(self, code: int) -> Counter:
        counter = self.requests.get(code)
        if counter is None:
            counter = self.requests[code] = REQUESTS.labels(*self.labels, str(code))
        return counter


_series: dict[tuple[str, str, str], TargetSeries] = {}


def series(organization: str, route: str, target: str) -> TargetSeries:
    labels = (organization, route, target)
    found = _series.get(labels)
    if found is None:
        found = _series[labels] = TargetSeries(
            requests={},
            input_tokens=TOKENS.labels(*labels, "input"),
            output_tokens=TOKENS.labels(*labels, "output"),
            cost=COST.labels(*labels),
            latency=LATENCY.labels(*labels),
            ttft=TTFT.labels(*labels),
            labels=labels,
        )
    return found


def render() -> bytes:
    return generate_latest(registry)
