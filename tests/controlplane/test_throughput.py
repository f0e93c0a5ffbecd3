"""Replicas' throughput: counters from /metrics, samples between scrapes, the estimate per
model and GPU type, and what routing's cost order makes of it."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest

from deployments.models import Deployment, GpuType, Replica, Throughput
from deployments.probes import Target
from deployments.reconcile import reconcile_fleet
from deployments.scaling import Metrics, autoscaled_desired
from deployments.throughput import (
    BASELINE_SECONDS,
    BENCHMARK,
    MEASURED,
    MIN_TOKENS,
    Counters,
    counters_in,
    figure_for,
    interval,
    smoothed,
    step,
)
from modelserver.metrics import ServingMetrics
from routing.gateway.snapshot import load_snapshot
from routing.policy import order_targets
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import create_deployment, create_route, ensure_clusters


def _counters(tokens: int, busy: str, started: str | None = "1000") -> Counters:
    return Counters(tokens=Decimal(tokens), busy_seconds=Decimal(busy), started_at=Decimal(started) if started else None)


# --- reading the counters ------------------------------------------------------------------


def test_the_model_servers_own_exposition_gives_its_counters() -> None:
    metrics = ServingMetrics("chat", max_batch_size=16, max_wait_ms=5.0)
    metrics.prompt_tokens.inc(120)
    metrics.generation_tokens.inc(80)
    counters = counters_in(metrics.render().decode())
    assert counters is not None
    assert counters.tokens == 200 and counters.busy_seconds == 0 and counters.started_at is not None and counters.started_at > 0


def test_text_without_busy_seconds_or_not_prometheus_gives_nothing() -> None:
    assert counters_in("<html>502 Bad Gateway</html>") is None
    assert counters_in("") is None
    older_server = "# TYPE switchboard:prompt_tokens_total counter\nswitchboard:prompt_tokens_total 500.0\n"
    assert counters_in(older_server) is None


# --- samples between scrapes --------------------------------------------------------------


def test_a_sample_is_tokens_over_busy_seconds_between_two_scrapes() -> None:
    first = interval(baseline=None, current=_counters(1000, "10"))
    assert first.rate is None and first.baseline == _counters(1000, "10")  # nothing to compare with yet
    second = interval(baseline=first.baseline, current=_counters(1600, "13"))
    assert second.rate == Decimal(200) and second.baseline == _counters(1600, "13")


def test_too_few_tokens_keep_the_baseline_so_they_add_up() -> None:
    baseline = _counters(1000, "10")
    quiet = interval(baseline=baseline, current=_counters(1000 + MIN_TOKENS - 1, "11"))
    assert quiet.rate is None and quiet.baseline == baseline
    later = interval(baseline=quiet.baseline, current=_counters(1000 + MIN_TOKENS + 100, "12"))
    assert later.rate == Decimal(MIN_TOKENS + 100) / 2


@pytest.mark.parametrize(
    "current",
    [
        _counters(50, "0.5", started="2000"),  # restarted: a new start time, counters from zero
        _counters(900_000, "500", started="2000"),  # restarted and already past the old counters
        _counters(50, "0.5"),  # counters went down with the same start time
        _counters(5000, "5"),  # busy seconds went down
        _counters(50, "0.5", started=None),  # a server that stopped saying when it started
    ],
)
def test_a_restarted_replica_gives_no_sample_and_a_fresh_baseline(current: Counters) -> None:
    step = interval(baseline=_counters(1000, "10"), current=current)
    assert step.rate is None and step.baseline == current


def test_tokens_without_busy_time_or_past_any_replica_are_not_rates() -> None:
    baseline = _counters(1000, "10")
    assert interval(baseline=baseline, current=_counters(5000, "10")).rate is None
    assert interval(baseline=baseline, current=_counters(10**13, "10.001")).rate is None


def test_baselines_move_on_with_each_scrape_and_are_kept_for_the_replicas_named() -> None:
    first = step(counters={"rep_a": _counters(1000, "10")}, baselines={}, replica_ids=["rep_a", "rep_b"], now=100.0)
    assert first.samples == {} and set(first.baselines) == {"rep_a"}  # rep_b has not been scraped yet
    second = step(
        counters={"rep_a": _counters(1600, "13"), "rep_b": _counters(50, "1")},
        baselines=first.baselines,
        replica_ids=["rep_a", "rep_b"],
        now=105.0,
    )
    assert second.samples == {"rep_a": Decimal(200)} and set(second.baselines) == {"rep_a", "rep_b"}
    # A replica whose /metrics did not answer keeps its baseline; one no longer named is forgotten.
    third = step(counters={}, baselines=second.baselines, replica_ids=["rep_a"], now=110.0)
    assert third.samples == {} and third.baselines == {"rep_a": second.baselines["rep_a"]}
    fourth = step(counters={"rep_a": _counters(2200, "16")}, baselines=third.baselines, replica_ids=["rep_a"], now=115.0)
    assert fourth.samples == {"rep_a": Decimal(200)}


def test_a_replica_not_scraped_for_an_hour_starts_a_fresh_baseline() -> None:
    kept = step(counters={"rep_a": _counters(1000, "10")}, baselines={}, replica_ids=["rep_a"], now=100.0).baselines
    late = step(counters={"rep_a": _counters(1600, "13")}, baselines=kept, replica_ids=["rep_a"], now=100.0 + BASELINE_SECONDS)
    assert late.samples == {} and late.baselines["rep_a"][:2] == ("1600", "13")
    # Nor is a baseline that is not one read as one.
    odd = step(counters={"rep_a": _counters(1600, "13")}, baselines={"rep_a": ("1000", "10", "1000")}, replica_ids=["rep_a"], now=1.0)
    assert odd.samples == {}


def test_the_estimate_is_an_exponentially_weighted_average() -> None:
    assert smoothed(estimate=None, sample=Decimal("123.4567")) == Decimal("123.457")
    assert smoothed(estimate=Decimal(100), sample=Decimal(200)) == Decimal(120)  # a sample weighs 0.2
    estimate = Decimal(100)
    for _ in range(40):
        estimate = smoothed(estimate=estimate, sample=Decimal(500))
    assert Decimal(499) < estimate <= Decimal(500)  # it follows a lasting change


def test_the_figure_is_measured_when_replicas_reported_else_the_catalogs_benchmark() -> None:
    measured = {("tiny-chat", "T4"): Decimal("900")}
    on_t4 = figure_for(model="tiny-chat", gpu_type="T4", measured=measured)
    assert (on_t4.tokens_per_second, on_t4.source) == (Decimal(900), MEASURED)
    on_cpu = figure_for(model="tiny-chat", gpu_type="CPU", measured=measured)  # another GPU type: not measured there
    assert (on_cpu.tokens_per_second, on_cpu.source) == (Decimal(168), BENCHMARK)
    unknown = figure_for(model="someone-elses-model", gpu_type="T4", measured=measured)
    assert unknown.source == BENCHMARK and unknown.tokens_per_second > 0


# --- through the reconcile loop and the gateway's snapshot --------------------------------


@pytest.fixture
def fleet(tenants: Tenants) -> Fleet:
    ensure_clusters()
    return Fleet()


class ReportingReplicas:
    """A scrape whose replicas report the throughput set per deployment: each call, every
    replica has processed `tokens_per_second` x 10 more tokens in 10 more busy seconds."""

    def __init__(self, rates: dict[str, int]) -> None:
        self.rates = rates  # deployment id -> tokens per second
        self.totals: dict[str, tuple[int, int]] = {}

    def __call__(self, targets: Sequence[Target]) -> dict[str, Metrics]:
        metrics = {}
        for target in targets:
            deployment_id = Replica.objects.unscoped_across_tenants().get(pk=target.replica_id).deployment_id
            tokens, busy = self.totals.get(target.replica_id, (0, 0))
            tokens, busy = tokens + self.rates[deployment_id] * 10, busy + 10
            self.totals[target.replica_id] = (tokens, busy)
            metrics[target.replica_id] = Metrics(concurrency=0.0, counters=_counters(tokens, str(busy)))
        return metrics


def _lowest_cost_first(org_id: str, route: str) -> list[str]:
    targets = load_snapshot(org_id).routes[route].targets
    return [target.label for target in order_targets("lowest_cost", targets, lambda target: None)]


def test_measured_throughput_decides_between_gpu_types_of_the_same_price(tenants: Tenants, fleet: Fleet) -> None:
    cpu_price = GpuType.objects.get(code="CPU").default_price_per_hour
    GpuType.objects.filter(code="T4").update(default_price_per_hour=cpu_price)  # the same price per hour
    on_cpu = create_deployment(tenants.org_a, name="chat-cpu", gpu_type="CPU", min_replicas=1, max_replicas=1)
    on_t4 = create_deployment(tenants.org_a, name="chat-t4", gpu_type="T4", min_replicas=1, max_replicas=1)
    elsewhere = create_deployment(tenants.org_b, name="chat-t4", gpu_type="T4", min_replicas=1, max_replicas=1)
    deployments = (on_cpu, on_t4, elsewhere)
    for deployment in deployments:
        fleet.run(deployment, passes=2)
    create_route(tenants.org_a, "chat", targets=[(on_cpu, 50), (on_t4, 50)], strategy="lowest_cost")
    # No replica has reported: both use the catalog's benchmark figure, a tie kept in order.
    assert _lowest_cost_first(tenants.org_a.pk, "chat") == ["deployment:chat-cpu", "deployment:chat-t4"]
    assert {target.throughput.source for target in load_snapshot(tenants.org_a.pk).routes["chat"].targets} == {BENCHMARK}  # type: ignore[union-attr]

    scrape = ReportingReplicas({on_cpu.pk: 60, on_t4.pk: 900, elsewhere.pk: 900})
    ids = [deployment.pk for deployment in deployments]
    for _ in range(3):
        assert reconcile_fleet(ids, drivers=fleet.driver, probe=fleet.probe, scrape=scrape).steady == 3

    estimates = {(row.model, row.gpu_type_id): (row.tokens_per_second, row.samples) for row in Throughput.objects.all()}
    assert estimates == {("tiny-chat", "CPU"): (Decimal(60), 2), ("tiny-chat", "T4"): (Decimal(900), 4)}
    assert _lowest_cost_first(tenants.org_a.pk, "chat") == ["deployment:chat-t4", "deployment:chat-cpu"]
    targets = {target.label: target for target in load_snapshot(tenants.org_a.pk).routes["chat"].targets}
    fast, slow = targets["deployment:chat-t4"], targets["deployment:chat-cpu"]
    assert fast.throughput is not None and fast.throughput.source == MEASURED and fast.throughput.tokens_per_second == 900
    # The per-token figure is the GPU price spread over the measured tokens: 15x cheaper.
    assert slow.input_price_per_mtok == (cpu_price / 3600 / 60 * 1_000_000).quantize(Decimal("0.000001"))
    assert fast.input_price_per_mtok == (cpu_price / 3600 / 900 * 1_000_000).quantize(Decimal("0.000001"))
    assert fast.gpu_price_per_hour == slow.gpu_price_per_hour == cpu_price  # what is billed is unchanged
    # Platform-wide: the other tenant's deployment of the model on T4 sees the same estimate.
    [theirs] = load_snapshot(tenants.org_b.pk).routes["chat-t4"].targets
    assert theirs.input_price_per_mtok == fast.input_price_per_mtok


def test_a_full_reconcile_pass_records_samples_too(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=1, max_replicas=1)
    fleet.run(deployment, passes=2)
    scrape = ReportingReplicas({deployment.pk: 300})
    deployment = Deployment.objects.for_org(tenants.org_a).select_related("current_revision").get(pk=deployment.pk)
    ready = list(Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY))
    for _ in range(2):
        assert autoscaled_desired(deployment, ready, scrape=scrape) == 1
    row = Throughput.objects.get(model="tiny-chat", gpu_type_id="CPU")
    assert (row.tokens_per_second, row.samples) == (Decimal(300), 1)


def test_the_fleet_pass_and_the_full_pass_share_each_replicas_baseline(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=1, max_replicas=1)
    other = create_deployment(tenants.org_b, name="chat", min_replicas=1, max_replicas=1)
    for each in (deployment, other):
        fleet.run(each, passes=2)
    scrape = ReportingReplicas({deployment.pk: 300, other.pk: 300})
    ids = [deployment.pk, other.pk]
    assert reconcile_fleet(ids, drivers=fleet.driver, probe=fleet.probe, scrape=scrape).steady == 2  # baselines
    deployment = Deployment.objects.for_org(tenants.org_a).select_related("current_revision").get(pk=deployment.pk)
    ready = list(Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY))
    assert autoscaled_desired(deployment, ready, scrape=scrape) == 1  # a sample from the fleet pass's baseline
    assert reconcile_fleet(ids, drivers=fleet.driver, probe=fleet.probe, scrape=scrape).steady == 2
    # Three samples: org A's from the full pass and then the fleet pass, org B's from the second fleet pass.
    row = Throughput.objects.get(model="tiny-chat", gpu_type_id="CPU")
    assert (row.tokens_per_second, row.samples) == (Decimal(300), 3)
