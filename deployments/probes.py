"""Probing replicas' /health and fetching their /metrics, all of a pass's at once.

A reconcile pass hands every replica it will look at to `check_replicas` in one call:
each replica gets GET /health (2 s timeout) and, when that says ready, GET /metrics on
the same connection (1 s timeout, with the replica's bearer token). Every replica's
requests run side by side on one event loop, at most `PROBE_CONCURRENCY_PER_CLUSTER`
replicas of one cluster at a time and `MAX_IN_FLIGHT` in all. A timeout starts when the
replica's turn starts (never while it waits for a slot) and counts against that replica
only: a replica that does not answer in time is "unreachable", the others are not held up,
and the whole call lasts about one timeout however many replicas are slow.

The client is a keep-alive HTTP/1.1 pool on asyncio protocols with httptools' parser
(the one uvicorn uses), like the gateway's (routing/gateway/pool.py, which says why not
httpx): measured on this 2-core machine, an `httpx.AsyncClient` managed 400-600 requests a
second, 20,000 requests (10,000 replicas, /health and /metrics) about 40 s, where these
protocols do several thousand a second. Connections are kept per origin (scheme, host,
port) and reused for the next request there: a replica's /metrics after its /health, and
every replica behind one address (a cluster's proxy).

The sync pass runs the gather in an event loop of its own (`asyncio.run`); called from a
thread that already runs a loop, it runs it in a short-lived thread instead, never inside
the running loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import ssl
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httptools
import uvloop
from django.conf import settings

from deployments.internal_tokens import replica_token

HEALTH_TIMEOUT_S = 2.0
METRICS_TIMEOUT_S = 1.0
MAX_IN_FLIGHT = 128  # replicas being probed at once, over every cluster: sockets stay bounded
MAX_IDLE = 128  # idle keep-alive connections kept for reuse, over every origin
MAX_BODY_BYTES = 4 << 20  # a /metrics larger than this is not a model server's

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Target:
    """One replica to probe: its id (whose token /metrics wants), endpoint and cluster."""

    replica_id: str
    endpoint: str
    cluster: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What one replica answered."""

    health: str  # "ready" | "loading" | "broken: why" | "unreachable" ("" when not asked)
    metrics: str | None = None  # the /metrics text, when asked and it answered 200


Probe = Callable[[Sequence[Target]], dict[str, str]]  # replica id -> health, for each target


def health_of(status: int, body: bytes) -> str:
    """A /health answer in the control plane's words: 200 is ready; a model server that
    says "broken" is broken with its reason; another answer it gives is loading; anything
    that is not a model server's answer is unreachable."""
    if status == 200:
        return "ready"
    try:
        parsed = json.loads(body)
    except ValueError:
        return "unreachable"
    if not isinstance(parsed, dict):
        return "unreachable"
    if parsed.get("status") == "broken":
        return f"broken: {parsed.get('reason', 'engine failed')}"
    return "loading"


def probe_replicas(targets: Sequence[Target]) -> dict[str, str]:
    """Each target's /health, concurrently."""
    return {replica_id: answer.health for replica_id, answer in check_replicas(targets, metrics=False).items()}


def check_replicas(
    targets: Sequence[Target],
    *,
    health: bool = True,
    metrics: bool = True,
    per_cluster: int | None = None,
    health_timeout_s: float | None = None,
    metrics_timeout_s: float | None = None,
) -> dict[str, Answer]:
    """Every target's answers, by replica id: /health when `health`, and /metrics when
    `metrics` and (if probed) the replica is ready. Nothing raises for a replica that
    fails; it answers "unreachable" (or no metrics)."""
    if not targets:
        return {}
    limit = per_cluster or settings.PROBE_CONCURRENCY_PER_CLUSTER
    checker = _Checker(
        limit=limit,
        health_timeout_s=health_timeout_s or HEALTH_TIMEOUT_S,
        metrics_timeout_s=metrics_timeout_s or METRICS_TIMEOUT_S,
    )
    return run_in_own_loop(lambda: checker.check_all(targets, health=health, metrics=metrics))


def run_in_own_loop(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Runs a coroutine to completion in a new event loop; from a thread whose loop is
    running (an async caller), in a short-lived thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(make)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run, make).result()


def _run(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # uvicorn's loop: about half the CPU per request
        return runner.run(make())


class _Failed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Url:
    origin: tuple[str, str, int]  # scheme, host, port
    host_header: bytes
    base_path: str  # the endpoint's own path, without a trailing slash


def _url(endpoint: str) -> _Url | None:
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    return _Url((parts.scheme, parts.hostname, port), parts.netloc.encode("idna"), parts.path.rstrip("/"))


class _Checker:
    def __init__(self, *, limit: int, health_timeout_s: float, metrics_timeout_s: float) -> None:
        self.limit = limit
        self.health_timeout_s = health_timeout_s
        self.metrics_timeout_s = metrics_timeout_s
        self.pool = _Pool()

    async def check_all(self, targets: Sequence[Target], *, health: bool, metrics: bool) -> dict[str, Answer]:
        in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        per_cluster: Mapping[str, asyncio.Semaphore] = collections.defaultdict(lambda: asyncio.Semaphore(self.limit))
        try:
            answers = await asyncio.gather(
                *(self._check(target, per_cluster[target.cluster], in_flight, health=health, metrics=metrics) for target in targets)
            )
        finally:
            self.pool.close()
        return {target.replica_id: answer for target, answer in zip(targets, answers, strict=True)}

    async def _check(
        self, target: Target, cluster_slot: asyncio.Semaphore, in_flight: asyncio.Semaphore, *, health: bool, metrics: bool
    ) -> Answer:
        url = _url(target.endpoint)
        if url is None:
            return Answer("unreachable" if health else "")
        async with cluster_slot, in_flight:
            state = ""
            if health:
                try:
                    async with asyncio.timeout(self.health_timeout_s):
                        status, body = await self.pool.get(url, "/health", b"")
                except (_Failed, TimeoutError):
                    return Answer("unreachable")
                state = health_of(status, body)
                if state != "ready":
                    return Answer(state)
            if not metrics:
                return Answer(state)
            token = b"authorization: Bearer " + replica_token(target.replica_id).encode() + b"\r\n"
            try:
                async with asyncio.timeout(self.metrics_timeout_s):
                    status, body = await self.pool.get(url, "/metrics", token)
            except (_Failed, TimeoutError):
                return Answer(state)
            if status != 200:
                return Answer(state)
            return Answer(state, body.decode("utf-8", errors="replace"))


class _Pool:
    """Keep-alive connections by origin. A connection is reused only after a complete
    response; one that timed out or failed is closed."""

    def __init__(self) -> None:
        self.idle: collections.OrderedDict[_Connection, tuple[str, str, int]] = collections.OrderedDict()
        self.by_origin: dict[tuple[str, str, int], list[_Connection]] = collections.defaultdict(list)
        self.tls: ssl.SSLContext | None = None

    async def get(self, url: _Url, path: str, extra_headers: bytes) -> tuple[int, bytes]:
        request = b"GET %s HTTP/1.1\r\nhost: %s\r\n%saccept: */*\r\n\r\n" % (
            (url.base_path + path).encode("utf-8"),
            url.host_header,
            extra_headers,
        )
        connection = self._take(url.origin)
        if connection is not None:
            try:
                return await self._exchange(connection, url, request)
            except _Failed as error:
                if not error.args or error.args[0] != "closed before an answer":
                    raise
                # A kept-alive connection the server had closed meanwhile: a GET is safe to resend.
        connection = await self._connect(url)
        return await self._exchange(connection, url, request)

    async def _exchange(self, connection: _Connection, url: _Url, request: bytes) -> tuple[int, bytes]:
        try:
            status, body = await connection.send(request)
        except BaseException:
            connection.close()  # a timeout or a failure: the connection's state is unknown
            raise
        if connection.keep_alive and not connection.closed:
            self._release(connection, url.origin)
        else:
            connection.close()
        return status, body

    async def _connect(self, url: _Url) -> _Connection:
        scheme, host, port = url.origin
        tls = None
        if scheme == "https":
            self.tls = self.tls or ssl.create_default_context()
            tls = self.tls
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, host, port, ssl=tls)
        except OSError as error:
            raise _Failed(f"could not connect: {error}") from None
        return connection

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        connections = self.by_origin.get(origin)
        while connections:
            connection = connections.pop()
            del self.idle[connection]
            if not connection.closed:
                return connection
        return None

    def _release(self, connection: _Connection, origin: tuple[str, str, int]) -> None:
        self.idle[connection] = origin
        self.by_origin[origin].append(connection)
        while len(self.idle) > MAX_IDLE:
            oldest, oldest_origin = self.idle.popitem(last=False)
            self.by_origin[oldest_origin].remove(oldest)
            oldest.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
        self.by_origin.clear()


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time, each response read whole."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.body: list[bytes] = []
        self.size = 0
        self.got_bytes = False
        self.keep_alive = False
        self.framed = False  # a length or chunking says where the body ends
        self.closed = False

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise _Failed("closed before an answer")
        self.waiter = asyncio.get_running_loop().create_future()
        self.status, self.body, self.size, self.got_bytes, self.framed = 0, [], 0, False, False
        self.transport.write(request)
        return await self.waiter

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(f"invalid HTTP: {error}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done() and self.status and not self.framed and exc is None:
            # A body with neither length nor chunking ends when the server hangs up.
            self.waiter.set_result((self.status, b"".join(self.body)))
            return
        self._fail("closed before an answer" if not self.got_bytes else "closed mid-answer")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.framed = False
            return  # an interim answer: the real one follows
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if not self.status:
            return
        self.size += len(body)
        if self.size > MAX_BODY_BYTES:
            self._fail("answer too large")
            self.close()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.status:
            return  # the end of an interim answer
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, b"".join(self.body)))

    def _fail(self, message: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(_Failed(message))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
