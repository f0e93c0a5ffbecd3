"""The autoscaler fed from replicas' concurrency, with its samples kept between passes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from deployments.models import Deployment, Quota, Replica
from deployments.probes import Target
from deployments.scaling import Metrics, autoscaled_desired, concurrency_in
from modelserver.metrics import ServingMetrics
from tests.conftest import Tenants
from tests.factories import create_deployment


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _ready(deployment: Deployment, count: int) -> list[Replica]:
    return [Replica(deployment=deployment, state=Replica.State.READY, endpoint=f"http://replica-{index}") for index in range(count)]


def test_load_on_the_replicas_drives_the_count(tenants: Tenants) -> None:
    Quota.objects.create(organization=tenants.org_a, max_replicas=10, gpus={"CPU": 10})
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=5, target_concurrency=2, scale_down_delay_s=0)
    clock = Clock()
    load = {"value": 0.0}
    seen: list[list[Target]] = []

    def scrape(targets: Sequence[Target]) -> dict[str, Metrics]:
        seen.append(list(targets))
        return {target.replica_id: Metrics(concurrency=load["value"] / len(targets), counters=None) for target in targets}

    assert autoscaled_desired(deployment, _ready(deployment, 1), scrape=scrape, clock=clock) == 1
    [target] = seen[-1]  # scraped with the replica's id, whose token /metrics wants
    assert target.endpoint == "http://replica-0" and target.replica_id.startswith("rep_")
    load["value"] = 6.0  # 6 in flight / (2 x 0.7) -> 5 replicas, reached through the panic window
    desired = 1
    for _ in range(5):
        clock.now += 2
        desired = autoscaled_desired(deployment, _ready(deployment, desired), scrape=scrape, clock=clock)
    assert desired == 5


def test_a_wake_request_asks_for_one_replica_until_idle(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=0, max_replicas=2, idle_timeout_s=30, scale_down_delay_s=0)
    clock = Clock()
    assert autoscaled_desired(deployment, [], scrape=lambda targets: {}, clock=clock) == 0
    deployment.wake_requested_at = datetime.fromtimestamp(clock.now, tz=UTC)
    assert autoscaled_desired(deployment, [], scrape=lambda targets: {}, clock=clock) == 1
    clock.now += 20
    assert autoscaled_desired(deployment, _ready(deployment, 1), scrape=lambda targets: {}, clock=clock) == 1
    clock.now += 20  # 40 s after the last request: idle past the 30 s timeout
    assert autoscaled_desired(deployment, _ready(deployment, 1), scrape=lambda targets: {}, clock=clock) == 0


def test_concurrency_is_running_plus_waiting_over_every_label_set() -> None:
    exposition = (
        "# HELP switchboard:num_requests_running Requests in the batch.\n"
        "# TYPE switchboard:num_requests_running gauge\n"
        'switchboard:num_requests_running{model_name="chat"} 3.0\n'
        "# TYPE switchboard:num_requests_waiting gauge\n"
        'switchboard:num_requests_waiting{model_name="chat"} 2.0\n'
        'switchboard:num_requests_waiting{model_name="other"} 1.0\n'
        "# TYPE switchboard:max_batch_size gauge\n"
        "switchboard:max_batch_size 16.0\n"
        "# TYPE switchboard:num_requests_running_total counter\n"
        "switchboard:num_requests_running_total 99.0\n"
    )
    assert concurrency_in(exposition) == 6.0


def test_text_that_is_not_prometheus_counts_as_nothing() -> None:
    assert concurrency_in("<html>502 Bad Gateway</html>") == 0.0
    assert concurrency_in("") == 0.0


def test_the_model_servers_own_exposition_is_read() -> None:
    metrics = ServingMetrics("chat", max_batch_size=16, max_wait_ms=5.0)
    metrics.requests_running.set(4)
    metrics.requests_waiting.set(7)
    metrics.queue_time.observe(0.2)
    assert concurrency_in(metrics.render().decode()) == 11.0


def test_a_vllm_replicas_exposition_is_read_like_the_built_in_servers() -> None:
    """vLLM's OpenAI server exports the same series under `vllm:`; the autoscaler treats a
    vLLM replica as one of its own."""
    exposition = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="smollm2-135m-instruct"} 5.0\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="smollm2-135m-instruct"} 4.0\n'
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model_name="smollm2-135m-instruct"} 0.4\n'
    )
    assert concurrency_in(exposition) == 9.0
