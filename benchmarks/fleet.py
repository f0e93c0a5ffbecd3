"""A fleet of fake replicas on one port: `/c/<cluster>/r/<replica>/health` and `.../metrics`
answer as a model server would, for any number of replica endpoints.

Used by `bench controlplane` (the reconcile pass with real HTTP probes) and by the probe
tests. It is a plain asyncio protocol server with httptools' request parser, so that
serving 20,000 requests costs the benchmark as little as possible; it counts what the
tests check: connections opened, requests, and the most slow answers held at once per
cluster. A replica's behaviour is "ready" (the default), "loading", "broken", "slow"
(answers after `slow_s`), "refuse" (drops the connection) or "garbage" (not HTTP).
Nothing here imports Django; `python -m benchmarks.fleet --port N` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import socket
import threading
from dataclasses import dataclass, field

import httptools
import uvloop

# The shape of the model server's own exposition: the series the control plane reads
# among histograms it does not (about 10 KB, like modelserver.metrics renders).
_HISTOGRAM = "".join(
    f'switchboard:time_to_first_token_seconds_bucket{{le="{le}",model_name="bench"}} 0.0\n'
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf")
)
METRICS = (
    "# HELP switchboard:num_requests_running Requests in the running batch.\n"
    "# TYPE switchboard:num_requests_running gauge\n"
    'switchboard:num_requests_running{model_name="bench"} 1.0\n'
    "# HELP switchboard:num_requests_waiting Requests waiting for the batch.\n"
    "# TYPE switchboard:num_requests_waiting gauge\n"
    'switchboard:num_requests_waiting{model_name="bench"} 0.0\n'
    "# TYPE switchboard:prompt_tokens counter\n"
    'switchboard:prompt_tokens_total{model_name="bench"} 1200.0\n'
    "# TYPE switchboard:generation_tokens counter\n"
    'switchboard:generation_tokens_total{model_name="bench"} 3400.0\n'
    "# TYPE switchboard:busy_seconds counter\n"
    'switchboard:busy_seconds_total{model_name="bench"} 12.5\n'
    "# TYPE switchboard:start_time_seconds gauge\n"
    'switchboard:start_time_seconds{model_name="bench"} 1.7e+09\n'
    "# TYPE switchboard:time_to_first_token_seconds histogram\n" + _HISTOGRAM * 12
).encode()


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (status, content_type, len(body), body)


_ANSWERS = {
    ("ready", "health"): _response(b"200 OK", b'{"status":"ok"}'),
    ("loading", "health"): _response(b"503 Service Unavailable", b'{"status":"loading"}'),
    ("broken", "health"): _response(b"503 Service Unavailable", b'{"status":"broken","reason":"CUDA error: device lost"}'),
    ("ready", "metrics"): _response(b"200 OK", METRICS, b"text/plain; version=0.0.4"),
}
_NOT_FOUND = _response(b"404 Not Found", b'{"error":"not found"}')


@dataclass
class FleetStats:
    connections: int = 0
    requests: int = 0
    # Slow answers being held, by cluster, and the most at once (answers at once take no time).
    in_flight: collections.Counter[str] = field(default_factory=collections.Counter)
    most_in_flight: collections.Counter[str] = field(default_factory=collections.Counter)
    metrics_tokens: dict[str, bytes] = field(default_factory=dict)  # the Authorization each replica's /metrics got


class _Replica(asyncio.Protocol):
    def __init__(self, fleet: FleetServer) -> None:
        self.fleet = fleet
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.authorization = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fleet.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_url(self, url: bytes) -> None:
        self.url, self.authorization = url, b""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorization = value

    def on_message_complete(self) -> None:
        self.fleet.stats.requests += 1
        # /c/<cluster>/r/<replica>/<health|metrics>
        parts = self.url.decode("latin-1").split("/")
        if len(parts) != 6 or parts[1] != "c" or parts[3] != "r":
            self._write(_NOT_FOUND)
            return
        cluster, replica, what = parts[2], parts[4], parts[5]
        if what == "metrics":
            self.fleet.stats.metrics_tokens[replica] = self.authorization
        behaviour = self.fleet.behaviours.get(replica, "ready")
        if behaviour == "refuse":
            self.close()
        elif behaviour == "garbage":
            self._write(b"this is not HTTP\r\n\r\n")
            self.close()
        elif behaviour == "slow":
            asyncio.get_running_loop().create_task(self._slowly(cluster, what))
        else:
            self._write(_ANSWERS.get((behaviour, what), _ANSWERS.get(("ready", what), _NOT_FOUND)))

    async def _slowly(self, cluster: str, what: str) -> None:
        self._count(cluster, +1)
        try:
            await asyncio.sleep(self.fleet.slow_s)
            self._write(_ANSWERS.get(("ready", what), _NOT_FOUND))
        finally:
            self._count(cluster, -1)

    def _count(self, cluster: str, step: int) -> None:
        stats = self.fleet.stats
        stats.in_flight[cluster] += step
        stats.most_in_flight[cluster] = max(stats.most_in_flight[cluster], stats.in_flight[cluster])

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FleetServer:
    """The fleet on 127.0.0.1, in a thread of its own with its own event loop."""

    def __init__(self, *, behaviours: dict[str, str] | None = None, slow_s: float = 5.0, port: int = 0) -> None:
        self.behaviours = behaviours or {}
        self.slow_s = slow_s
        self.stats = FleetStats()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="fleet-server", daemon=True)
        self.started = threading.Event()

    def endpoint(self, cluster: str, replica: str) -> str:
        return f"http://127.0.0.1:{self.port}/c/{cluster}/r/{replica}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(self.loop.create_server(lambda: _Replica(self), sock=self.sock))
        self.started.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()  # slow answers nobody waits for any more
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def __enter__(self) -> FleetServer:
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with FleetServer(port=args.port) as fleet:
        print(f"fleet server on {fleet.port}", flush=True)
        fleet.thread.join()


if __name__ == "__main__":
    main()
