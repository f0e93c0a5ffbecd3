"""The autoscaler replayed on recorded concurrency series."""

from __future__ import annotations

from collections.abc import Callable

from deployments.autoscaler import AutoscalerState, Decision, Sample, ScalingPolicy, decide

POLICY = ScalingPolicy(min_replicas=0, max_replicas=10, target_concurrency=5, utilisation=0.7, scale_down_delay_s=30, idle_timeout_s=120)


def replay(
    load: Callable[[float], float], seconds: int, policy: ScalingPolicy = POLICY, start_replicas: int = 0
) -> list[tuple[float, Decision]]:
    """One concurrency sample a second, a decision every two seconds; replicas become
    ready at once, so what is replayed is the policy alone."""
    samples: list[Sample] = []
    state = AutoscalerState()
    replicas = start_replicas
    decisions = []
    for second in range(seconds):
        samples.append(Sample(at=float(second), concurrency=load(second)))
        samples = [sample for sample in samples if sample.at > second - policy.stable_window_s]
        if second % 2 == 0:
            decision, state = decide(policy, samples, replicas, float(second), state)
            replicas = decision.desired
            decisions.append((float(second), decision))
    return decisions


def at(decisions: list[tuple[float, Decision]], second: float) -> Decision:
    return max((item for item in decisions if item[0] <= second), key=lambda item: item[0])[1]


def test_steady_load_settles_on_concurrency_over_target_times_utilisation() -> None:
    decisions = replay(lambda t: 10.0, 180)
    # 10 in flight / (5 per replica x 0.7) = 2.86 -> 3 replicas, and it stays there.
    assert {decision.desired for second, decision in decisions if second >= 60} == {3}
    assert not any(decision.panicking for second, decision in decisions if second >= 60)


def test_a_burst_scales_up_within_the_panic_window_and_never_down_while_panicking() -> None:
    def load(t: float) -> float:
        return 20.0 if 90 <= t < 100 else 2.0

    decisions = replay(load, 240)
    assert at(decisions, 88).desired == 1
    assert at(decisions, 92).panicking and at(decisions, 92).desired > 1  # the first decision after the burst
    assert at(decisions, 96).desired >= 6  # 20 / 3.5 = 5.7: there within the panic window
    during_panic = [decision.desired for second, decision in decisions if 94 <= second < 150]
    assert during_panic == sorted(during_panic)  # never scales down while panicking
    assert at(decisions, 239).desired == 1  # back to the steady figure once calm


def test_scale_down_waits_for_the_delay() -> None:
    def load(t: float) -> float:
        return 14.0 if t < 120 else 3.0

    decisions = replay(load, 300)
    assert at(decisions, 118).desired == 4
    # The stable average falls over the next minute, but each drop waits 30 s.
    first_drop = next(second for second, decision in decisions if second > 120 and decision.desired < 4)
    assert first_drop >= 120 + 30
    assert at(decisions, 299).desired == 1


def test_decay_to_zero_after_the_idle_timeout_only_when_min_is_zero() -> None:
    def load(t: float) -> float:
        return 6.0 if t < 60 else 0.0

    decisions = replay(load, 400)
    assert at(decisions, 58).desired == 2
    assert at(decisions, 60 + 100).desired == 1  # no load, but not idle for 120 s yet
    assert at(decisions, 60 + 130).desired == 0
    assert "scale to zero" in at(decisions, 60 + 130).reason
    with_floor = replay(load, 400, ScalingPolicy(**{**POLICY.__dict__, "min_replicas": 1}))
    assert at(with_floor, 399).desired == 1


def test_scale_from_zero_on_the_first_request() -> None:
    decisions = replay(lambda t: 0.0 if t < 20 else 1.0, 30)
    assert at(decisions, 18).desired == 0
    assert at(decisions, 20).desired == 1


def test_limits_are_respected() -> None:
    assert {decision.desired for _, decision in replay(lambda t: 500.0, 120)} <= set(range(0, 11))
    assert at(replay(lambda t: 500.0, 120), 119).desired == 10
    floor = ScalingPolicy(**{**POLICY.__dict__, "min_replicas": 2})
    assert all(decision.desired >= 2 for _, decision in replay(lambda t: 0.0, 120, floor))
