"""The canary's verdict: a pure function of what the gateways counted for the canary and
the stable revision, the canary's thresholds and how long it has run. No I/O, so every
case is tested in-process (tests/controlplane/test_canary_analysis.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class RevisionStats:
    """Attempts sent to one revision's replicas, those that failed, and the latency of
    whole (non-streamed) answers."""

    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    latency_samples: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.latency_samples if self.latency_samples else None


@dataclass(frozen=True, slots=True)
class Thresholds:
    window_s: float  # observed at least this long before a promotion
    min_requests: int  # the canary's requests before any decision; the stable's before it is a baseline
    max_error_rate_increase: float  # canary error rate - baseline, at most (0.05: five points)
    max_latency_ratio: float  # canary mean latency / stable mean latency, at most


class Action(StrEnum):
    WAIT = "wait"
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str


def judge(*, canary: RevisionStats, stable: RevisionStats, thresholds: Thresholds, elapsed_s: float) -> Verdict:
    """Rolls back as soon as the canary has `min_requests` and is worse than the thresholds
    allow; promotes once the window has passed with the canary within them; else waits.

    The baseline error rate is the stable revision's when it has `min_requests` of its own,
    else 0 (the canary must then stay under the allowed increase outright). Latency is
    compared only when both revisions have `min_requests` whole answers timed: too few
    samples on either side say nothing about a mean."""
    if canary.requests < thresholds.min_requests:
        return Verdict(Action.WAIT, f"{canary.requests} of {thresholds.min_requests} canary requests so far")
    baseline = stable.error_rate if stable.requests >= thresholds.min_requests else 0.0
    if canary.error_rate > baseline + thresholds.max_error_rate_increase:
        return Verdict(
            Action.ROLL_BACK,
            f"canary error rate {canary.error_rate:.1%} ({canary.errors} of {canary.requests}) exceeds the stable "
            f"{baseline:.1%} by more than {thresholds.max_error_rate_increase:.1%}",
        )
    latencies = _comparable_latencies(canary, stable, thresholds.min_requests)
    if latencies is not None and latencies[0] > latencies[1] * thresholds.max_latency_ratio:
        return Verdict(
            Action.ROLL_BACK,
            f"canary mean latency {latencies[0]:.0f} ms is more than {thresholds.max_latency_ratio:g}x the stable {latencies[1]:.0f} ms",
        )
    if elapsed_s < thresholds.window_s:
        return Verdict(Action.WAIT, f"within thresholds; {thresholds.window_s - elapsed_s:.0f} s of the window left")
    latency = (
        f", mean latency {latencies[0]:.0f} ms vs {latencies[1]:.0f} ms"
        if latencies is not None
        else " (too few timed answers to compare latency)"
    )
    return Verdict(
        Action.PROMOTE,
        f"canary error rate {canary.error_rate:.1%} vs stable {baseline:.1%} over {canary.requests} requests{latency}",
    )


def _comparable_latencies(canary: RevisionStats, stable: RevisionStats, min_samples: int) -> tuple[float, float] | None:
    """Both mean latencies, when each rests on at least `min_samples` timed answers."""
    canary_mean, stable_mean = canary.mean_latency_ms, stable.mean_latency_ms
    if canary_mean is None or stable_mean is None or min(canary.latency_samples, stable.latency_samples) < min_samples:
        return None
    return canary_mean, stable_mean
