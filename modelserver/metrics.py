"""Prometheus metrics of one model server, named in the style of vLLM (`vllm:...`).

Throughput can be derived from two scrapes: tokens processed (`prompt_tokens_total` +
`generation_tokens_total`) over busy seconds (`busy_seconds_total`, time with at least
one request in the running batch or an embedding pass under way). `start_time_seconds`
tells a restarted server (its counters back at zero) from a live one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


class BusyClock:
    """Seconds with at least one request in flight, the period under way included, so a
    scrape in the middle of a long busy stretch sees it growing. Thread-safe: the chat
    engine runs on its own thread, scrapes come from the event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since: float | None = None
        self._total = 0.0

    def set_in_flight(self, count: int) -> None:
        with self._lock:
            now = self._clock()
            if count > 0 and self._busy_since is None:
                self._busy_since = now
            elif count <= 0 and self._busy_since is not None:
                self._total += now - self._busy_since
                self._busy_since = None
            self._in_flight = max(count, 0)

    def seconds(self) -> float:
        with self._lock:
            running = self._clock() - self._busy_since if self._busy_since is not None else 0.0
            return self._total + running


class _BusySeconds(Collector):
    def __init__(self, clock: BusyClock, model_name: str) -> None:
        self._clock = clock
        self._model_name = model_name

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "switchboard:busy_seconds",
            "Seconds with at least one request in the running batch or an embedding pass under way.",
            labels=["model_name"],
        )
        family.add_metric([self._model_name], self._clock.seconds())
        yield family


class ServingMetrics:
    def __init__(self, model_name: str, *, max_batch_size: int, max_wait_ms: float) -> None:
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"switchboard:{name}", doc, labelnames=list(labels), registry=self.registry).labels(**labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"switchboard:{name}", doc, labelnames=list(labels), registry=self.registry).labels(**labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"switchboard:{name}", doc, labelnames=list(labels), buckets=buckets, registry=self.registry).labels(**labels)

        self.requests_running = gauge("num_requests_running", "Requests in the running batch.")
        self.requests_waiting = gauge("num_requests_waiting", "Requests (or embedding inputs) waiting for the batch.")
        self.time_to_first_token = histogram("time_to_first_token_seconds", "Arrival to first generated token.", _LATENCY_BUCKETS)
        self.e2e_latency = histogram("e2e_request_latency_seconds", "Arrival to last token or embedding.", _LATENCY_BUCKETS)
        self.queue_time = histogram("request_queue_time_seconds", "Time spent waiting before joining a batch.", _LATENCY_BUCKETS)
        self.batch_size = histogram("batch_size", "Sequences per decode step, or inputs per embedding forward pass.", _BATCH_BUCKETS)
        self.prompt_tokens = counter("prompt_tokens", "Prompt (input) tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Tokens generated.")
        self.queue_rejections = counter("queue_rejections", "Requests refused with 503 because the queue was full.")
        self._request_success = Counter(
            "switchboard:request_success",
            "Finished requests by reason.",
            labelnames=["model_name", "finished_reason"],
            registry=self.registry,
        )
        self.busy = BusyClock()
        self.registry.register(_BusySeconds(self.busy, model_name))
        gauge("start_time_seconds", "When this server started (Unix time); a new value means its counters restarted.").set(time.time())
        gauge("max_batch_size", "Configured maximum batch size (1 means batching is off).").set(max_batch_size)
        gauge("max_wait_ms", "Configured longest wait to fill an embedding batch.").set(max_wait_ms)
        self._model_name = model_name

    def success(self, reason: str) -> None:
        self._request_success.labels(model_name=self._model_name, finished_reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
