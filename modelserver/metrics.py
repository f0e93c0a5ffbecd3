"""Prometheus metrics of one model server, named in the style of vLLM (`vllm:...`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


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
        gauge("max_batch_size", "Configured maximum batch size (1 means batching is off).").set(max_batch_size)
        gauge("max_wait_ms", "Configured longest wait to fill an embedding batch.").set(max_wait_ms)
        self._model_name = model_name

    def success(self, reason: str) -> None:
        self._request_success.labels(model_name=self._model_name, finished_reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
