"""The canary's verdict (deployments.canary_analysis.judge): a pure function, case by case."""

from __future__ import annotations

import pytest

from deployments.canary_analysis import Action, RevisionStats, Thresholds, judge

THRESHOLDS = Thresholds(window_s=60, min_requests=20, max_error_rate_increase=0.05, max_latency_ratio=1.5)


def stats(requests: int, errors: int = 0, mean_ms: float | None = 100.0, timed: int | None = None) -> RevisionStats:
    samples = (requests - errors if timed is None else timed) if mean_ms is not None else 0
    return RevisionStats(requests=requests, errors=errors, latency_ms_sum=(mean_ms or 0.0) * samples, latency_samples=samples)


@pytest.mark.parametrize(
    ("canary", "stable", "elapsed", "action", "says"),
    [
        # Too few canary requests: no verdict either way, however bad they look or long it ran.
        (stats(0), stats(500), 0, Action.WAIT, "0 of 20 canary requests"),
        (stats(19, errors=19), stats(500), 3600, Action.WAIT, "19 of 20"),
        # Enough requests, within the thresholds, before the window ends: wait.
        (stats(20), stats(500), 30, Action.WAIT, "30 s of the window left"),
        # ... and after it: promote.
        (stats(20), stats(500), 60, Action.PROMOTE, "0.0% vs stable 0.0% over 20 requests, mean latency 100 ms vs 100 ms"),
        # Errors beyond the stable's rate plus the allowed increase: roll back at once, window or not.
        (stats(100, errors=6), stats(500), 1, Action.ROLL_BACK, "6.0% (6 of 100) exceeds the stable 0.0% by more than 5.0%"),
        (stats(100, errors=16), stats(500, errors=50), 1, Action.ROLL_BACK, "exceeds the stable 10.0%"),
        # Exactly at the allowed increase is within it.
        (stats(100, errors=5), stats(500), 60, Action.PROMOTE, "5.0% vs stable 0.0%"),
        (stats(100, errors=15), stats(500, errors=50), 60, Action.PROMOTE, "15.0% vs stable 10.0%"),
        # A stable revision with too few requests of its own is no baseline: 0 stands in.
        (stats(100, errors=15), stats(10, errors=5), 60, Action.ROLL_BACK, "exceeds the stable 0.0%"),
        (stats(100, errors=4), stats(10, errors=5), 60, Action.PROMOTE, "4.0% vs stable 0.0%"),
        # Slower than allowed: roll back at once.
        (stats(50, mean_ms=151), stats(500, mean_ms=100), 1, Action.ROLL_BACK, "151 ms is more than 1.5x the stable 100 ms"),
        (stats(50, mean_ms=150), stats(500, mean_ms=100), 60, Action.PROMOTE, "mean latency 150 ms vs 100 ms"),
        # Faster is fine.
        (stats(50, mean_ms=20), stats(500, mean_ms=100), 60, Action.PROMOTE, "mean latency 20 ms vs 100 ms"),
        # Latency is compared only when both sides have enough timed answers (streams are not timed).
        (stats(50, mean_ms=900, timed=5), stats(500, mean_ms=100), 60, Action.PROMOTE, "too few timed answers"),
        (stats(50, mean_ms=900), stats(500, mean_ms=100, timed=19), 60, Action.PROMOTE, "too few timed answers"),
        (stats(50, mean_ms=None), stats(500, mean_ms=None), 60, Action.PROMOTE, "too few timed answers"),
        # Errors are judged before latency.
        (stats(100, errors=50, mean_ms=900), stats(500, mean_ms=100), 1, Action.ROLL_BACK, "error rate 50.0%"),
    ],
)
def test_the_verdict(canary: RevisionStats, stable: RevisionStats, elapsed: float, action: Action, says: str) -> None:
    verdict = judge(canary=canary, stable=stable, thresholds=THRESHOLDS, elapsed_s=elapsed)
    assert verdict.action == action
    assert says in verdict.reason, verdict.reason


def test_no_allowed_increase_rolls_back_on_the_first_error_past_the_minimum() -> None:
    strict = Thresholds(window_s=10, min_requests=5, max_error_rate_increase=0.0, max_latency_ratio=1.0)
    assert judge(canary=stats(5), stable=stats(5), thresholds=strict, elapsed_s=10).action == Action.PROMOTE
    assert judge(canary=stats(5, errors=1), stable=stats(5), thresholds=strict, elapsed_s=0).action == Action.ROLL_BACK


def test_rates_and_means() -> None:
    assert RevisionStats().error_rate == 0.0 and RevisionStats().mean_latency_ms is None
    assert RevisionStats(requests=4, errors=1, latency_ms_sum=300.0, latency_samples=3).error_rate == 0.25
    assert RevisionStats(requests=4, errors=1, latency_ms_sum=300.0, latency_samples=3).mean_latency_ms == 100.0
