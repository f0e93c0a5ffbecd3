"""Concurrency-based autoscaling in the spirit of Knative's KPA.

desired = ceil(average concurrency / (target per replica x utilisation)), averaged over a
stable window (60 s). A short panic window (6 s) catches bursts: when it asks for at least
twice the replicas that are ready, the autoscaler panics, scales up on the panic figure
and never scales down until a full stable window has passed without a burst. Scale-downs
wait for the scale-down delay (the highest recommendation inside it wins); with min 0, a
deployment that saw no requests for its idle timeout goes to zero. The result always lies
between min and max.

Pure functions over recorded samples, so every decision can be replayed and tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ScalingPolicy:
    min_replicas: int
    max_replicas: int
    target_concurrency: float
    utilisation: float = 0.7
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    scale_down_delay_s: float = 30.0
    idle_timeout_s: float = 300.0


@dataclass(frozen=True)
class Sample:
    at: float  # seconds, monotonic
    concurrency: float  # requests in flight across the deployment at that moment


@dataclass(frozen=True)
class AutoscalerState:
    panicking_until: float | None = None
    # (time, recommendation) pairs inside the scale-down delay
    recent: tuple[tuple[float, int], ...] = field(default_factory=tuple)
    last_request_at: float | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    panicking: bool
    stable_concurrency: float
    panic_concurrency: float
    reason: str


def _average(samples: Sequence[Sample], since: float) -> float:
    window = [sample.concurrency for sample in samples if sample.at >= since]
    return sum(window) / len(window) if window else 0.0


def decide(
    policy: ScalingPolicy, samples: Sequence[Sample], ready_replicas: int, now: float, state: AutoscalerState
) -> tuple[Decision, AutoscalerState]:
    per_replica = policy.target_concurrency * policy.utilisation
    stable = _average(samples, now - policy.stable_window_s)
    panic = _average(samples, now - policy.panic_window_s)
    want_stable = math.ceil(stable / per_replica) if stable > 0 else 0
    want_panic = math.ceil(panic / per_replica) if panic > 0 else 0

    last_request_at = state.last_request_at
    busy = [sample.at for sample in samples if sample.concurrency > 0]
    if busy:
        last_request_at = max(busy + ([last_request_at] if last_request_at is not None else []))

    panicking_until = state.panicking_until
    burst = want_panic > 0 and want_panic >= policy.panic_threshold * max(ready_replicas, 1) and want_panic > ready_replicas
    if burst:
        panicking_until = now + policy.stable_window_s
    panicking = panicking_until is not None and now < panicking_until
    if not panicking:
        panicking_until = None

    if panicking:
        recommended, reason = max(want_panic, want_stable, ready_replicas), "panic: a burst above twice the ready capacity"
    else:
        recommended, reason = want_stable, "stable window average"

    # Scale down only to the highest recommendation seen during the scale-down delay.
    recent = tuple((at, value) for at, value in state.recent if at > now - policy.scale_down_delay_s) + ((now, recommended),)
    held = max(value for _, value in recent)
    if held > recommended and not panicking:
        reason = f"holding for the scale-down delay ({policy.scale_down_delay_s:.0f} s)"
    desired = held

    if desired == 0 and last_request_at is not None and now - last_request_at < policy.idle_timeout_s:
        desired, reason = 1, "no load, but not idle for the idle timeout yet"
    if desired == 0 and policy.min_replicas == 0 and last_request_at is not None:
        reason = f"idle for {policy.idle_timeout_s:.0f} s: scale to zero"

    bounded = min(max(desired, policy.min_replicas), policy.max_replicas)
    if bounded != desired:
        reason += f" (limited to {policy.min_replicas}..{policy.max_replicas})"
    decision = Decision(desired=bounded, panicking=panicking, stable_concurrency=stable, panic_concurrency=panic, reason=reason)
    return decision, replace(state, panicking_until=panicking_until, recent=recent, last_request_at=last_request_at)
