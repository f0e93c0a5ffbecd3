"""What the autoscaler reads and keeps: concurrency from the model servers' /metrics,
and its samples and state between passes.

The figure is requests running plus waiting on each READY replica, summed per deployment
(the model server knows its own queue, including requests that did not come through the
gateway). Samples and the autoscaler's state live in the cache, shared by every worker, one
entry per deployment. The same scrape carries each replica's throughput counters, which it
hands to deployments.throughput; their baselines are kept in the same entry (one cache read
and one write per deployment for both). A reconcile pass fetches every replica's /metrics
beside its /health, all at once (deployments.probes), and hands each deployment its
replicas' share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from deployments import throughput
from deployments.autoscaler import AutoscalerState, Sample, ScalingPolicy, decide
from deployments.exposition import sample_values
from deployments.models import Deployment, Replica
from deployments.probes import Target, check_replicas

# The built-in server's names, and vLLM's (whose names it follows under its own prefix): the
# autoscaler reads a vLLM replica as it reads one of ours.
_CONCURRENCY_SERIES = (
    "switchboard:num_requests_running",
    "switchboard:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
)


@dataclass(frozen=True, slots=True)
class Metrics:
    """What one replica's /metrics said."""

    concurrency: float  # requests running plus waiting
    counters: throughput.Counters | None  # None when it does not count busy seconds


@dataclass(frozen=True, slots=True)
class Scraped:
    """What one scrape of a deployment's ready replicas found."""

    concurrency: float  # requests running plus waiting, summed
    counters: dict[str, throughput.Counters] = field(default_factory=dict)  # by replica id, those that answered

    @classmethod
    def of(cls, metrics: Mapping[str, Metrics], replica_ids: Iterable[str]) -> Scraped:
        """The sum over these replicas of what their scrapes found (one that did not answer adds nothing)."""
        total = 0.0
        counters: dict[str, throughput.Counters] = {}
        for replica_id in replica_ids:
            found = metrics.get(replica_id)
            if found is not None:
                total += found.concurrency
                if found.counters is not None:
                    counters[replica_id] = found.counters
        return cls(concurrency=total, counters=counters)


# Each target's /metrics, by replica id, for those that answered. The real one is
# scrape_replicas; a reconcile pass fetches /metrics beside /health (deployments.probes).
Scrape = Callable[[Sequence[Target]], dict[str, Metrics]]
COLD_START_PATIENCE_S = 600.0
CACHE_SECONDS = 3600  # how long a wake keeps asking for a replica that is not READY yet


def concurrency_in(metrics_text: str) -> float:
    """Requests running plus waiting in one replica's Prometheus exposition, over every
    label set. Text that does not parse counts as nothing (the replica is probed apart)."""
    try:
        return sum(value for _, value in sample_values(metrics_text, _CONCURRENCY_SERIES))
    except ValueError:
        return 0.0


def metrics_in(metrics_text: str) -> Metrics:
    """Concurrency and throughput counters from one read of the exposition (a malformed
    line spoils only the figure it belongs to, as reading each apart would)."""
    try:
        samples = sample_values(metrics_text, _CONCURRENCY_SERIES + throughput.COUNTER_SERIES)
    except ValueError:
        return Metrics(concurrency=concurrency_in(metrics_text), counters=throughput.counters_in(metrics_text))
    concurrency = sum(value for name, value in samples if name in _CONCURRENCY_SERIES)
    return Metrics(concurrency=concurrency, counters=throughput.counters_of(samples))


def scrape_replicas(targets: Sequence[Target]) -> dict[str, Metrics]:
    """Each target's /metrics (which wants the replica's bearer token), concurrently."""
    answers = check_replicas(targets, health=False)
    return {replica_id: metrics_in(answer.metrics) for replica_id, answer in answers.items() if answer.metrics is not None}


def targets_of(replicas: Iterable[Replica]) -> list[Target]:
    return [Target(replica_id=replica.id, endpoint=replica.endpoint, cluster=replica.cluster_id) for replica in replicas]


def record_throughput(*, samples: Mapping[str, Decimal], replicas: Iterable[Replica]) -> None:
    """Folds throughput samples (by replica id) into the estimates, with each replica's revision."""
    if samples:
        revisions = {replica.id: replica.revision_id for replica in replicas if replica.id in samples}
        throughput.fold(samples=samples, revisions=revisions, now=timezone.now())


def cache_key(deployment_id: str) -> str:
    return f"autoscaler:{deployment_id}"


def desired_from_store(
    deployment: Deployment, replicas: list[Replica], stored: dict[str, Any] | None, concurrency: float, now: float
) -> tuple[int, dict[str, Any]]:
    """The autoscaler's answer from its stored samples and state plus one new sample;
    returns what to store next. No I/O, so a whole fleet can be decided in one go."""
    revision = deployment.current_revision
    assert revision is not None
    policy = ScalingPolicy(
        min_replicas=revision.min_replicas,
        max_replicas=revision.max_replicas,
        target_concurrency=revision.target_concurrency,
        scale_down_delay_s=revision.scale_down_delay_s,
        idle_timeout_s=revision.idle_timeout_s,
    )
    stored = stored or {"samples": [], "state": {}}
    ready = [replica for replica in replicas if replica.state == Replica.State.READY]
    samples = [Sample(at, value) for at, value in stored["samples"] if at > now - policy.stable_window_s]
    samples.append(Sample(now, concurrency))
    state = AutoscalerState(**{**stored["state"], "recent": tuple(tuple(pair) for pair in stored["state"].get("recent", ()))})
    woken = deployment.wake_requested_at.timestamp() if deployment.wake_requested_at is not None else None
    if woken is not None:
        # A woken deployment counts as busy from the wake until its replica has been READY
        # for a moment: the request that woke it is waiting through the cold start.
        ready_since = max((replica.ready_at.timestamp() for replica in ready if replica.ready_at), default=woken)
        busy_until = max(woken, ready_since)
        state = AutoscalerState(state.panicking_until, state.recent, max(busy_until, state.last_request_at or busy_until))
    decision, state = decide(policy, samples, len(ready), now, state)
    # A wake is served once a replica was READY after it; later idling may then go to zero.
    served_wake = stored.get("served_wake")
    if woken is not None and any(replica.ready_at and replica.ready_at.timestamp() >= woken for replica in ready):
        served_wake = woken
    desired = decision.desired
    if woken is not None and woken != served_wake and not ready and now - woken < COLD_START_PATIENCE_S:
        desired = max(desired, min(1, policy.max_replicas))  # a request is waiting for a cold start
    stored_state = {
        "panicking_until": state.panicking_until,
        "recent": state.recent,
        "last_request_at": state.last_request_at,
    }  # asdict() is 10x slower
    return desired, {"samples": [(sample.at, sample.concurrency) for sample in samples], "state": stored_state, "served_wake": served_wake}


@dataclass(frozen=True, slots=True)
class Decided:
    """The autoscaler's answer for one deployment, what to keep in its cache entry, and the
    throughput samples its replicas' scrape gave (deployments.throughput)."""

    desired: int
    stored: dict[str, Any]  # the autoscaler's samples and state, and the replicas' throughput baselines
    samples: dict[str, Decimal]  # by replica id


def decided_from_store(
    *, deployment: Deployment, replicas: list[Replica], stored: dict[str, Any] | None, scraped: Scraped, now: float
) -> Decided:
    """The autoscaler's answer and the throughput step from the deployment's one cache entry
    and one scrape of its ready replicas; returns what to store next. No I/O."""
    desired, to_store = desired_from_store(deployment, replicas, stored, scraped.concurrency, now)
    stepped = throughput.step(
        counters=scraped.counters,
        baselines=(stored or {}).get("baselines", {}),
        replica_ids=[replica.id for replica in replicas],
        now=now,
    )
    to_store["baselines"] = stepped.baselines
    return Decided(desired=desired, stored=to_store, samples=stepped.samples)


def autoscaled_desired(
    deployment: Deployment, replicas: list[Replica], *, scrape: Scrape = scrape_replicas, clock: Callable[[], float] = time.time
) -> int:
    ready = [replica for replica in replicas if replica.state == Replica.State.READY]
    scraped = Scraped.of(scrape(targets_of(ready)), (replica.id for replica in ready)) if ready else Scraped(0.0)
    key = cache_key(deployment.id)
    decided = decided_from_store(deployment=deployment, replicas=replicas, stored=cache.get(key), scraped=scraped, now=clock())
    record_throughput(samples=decided.samples, replicas=ready)
    cache.set(key, decided.stored, timeout=CACHE_SECONDS)
    return decided.desired
