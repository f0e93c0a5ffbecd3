"""Tenants' URLs never reach internal addresses: the outbound policy (tenancy.network) at
save time, and the gateway's and the webhook's connections, which resolve once, check
every address and connect to the one checked (so DNS that changes in between, rebinding,
gains nothing). In-process, against real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from routing.gateway.pool import Http1Pool, HttpxUpstream, UpstreamRefused, Upstreams
from tenancy import network
from tenancy.network import OutboundPolicy, RefusedAddress, pinned, post_json, refusal

NOTHING_ALLOWED = OutboundPolicy()
INTERNAL = [
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "::ffff:127.0.0.1",
    "10.0.0.7",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "fc00::1",
    "fe80::1",
]


@pytest.mark.parametrize("address", INTERNAL)
def test_every_internal_address_class_is_refused(address: str) -> None:
    with pytest.raises(RefusedAddress):
        network.checked_addresses("host.test", [address], NOTHING_ALLOWED)


def test_public_addresses_pass_and_one_internal_among_them_refuses_all() -> None:
    assert network.checked_addresses("api.test", ["93.184.216.34", "2606:2800:220:1::1"], NOTHING_ALLOWED) == [
        "93.184.216.34",
        "2606:2800:220:1::1",
    ]
    with pytest.raises(RefusedAddress):
        network.checked_addresses("api.test", ["93.184.216.34", "10.0.0.1"], NOTHING_ALLOWED)


def test_the_operator_allows_hosts_addresses_and_networks_and_nothing_else() -> None:
    policy = OutboundPolicy.parse(["provider.corp.internal", "127.0.0.1", "10.20.0.0/16", "[::1]"])
    assert network.checked_addresses("provider.corp.internal", ["10.9.9.9"], policy)
    assert network.checked_addresses("x.test", ["127.0.0.1"], policy)
    assert network.checked_addresses("x.test", ["10.20.3.4"], policy)
    assert network.checked_addresses("x.test", ["::1"], policy)
    for address in ("127.0.0.2", "10.21.0.1", "169.254.169.254"):
        with pytest.raises(RefusedAddress):
            network.checked_addresses("x.test", [address], policy)
    with pytest.raises(ValueError, match="not a host name"):
        OutboundPolicy.parse(["not a host!"])


def test_urls_are_refused_when_saved_with_a_reason_to_act_on() -> None:
    assert refusal("ftp://files.test/x", NOTHING_ALLOWED) == "Give an http(s) URL, e.g. https://api.example.com/v1."
    assert refusal("https://user:secret@api.test/v1", NOTHING_ALLOWED) == "Leave credentials out of the URL."
    assert "public internet" in (refusal("http://localhost:8000/v1", NOTHING_ALLOWED) or "")
    assert "public internet" in (refusal("http://[::ffff:169.254.169.254]/", NOTHING_ALLOWED) or "")
    assert refusal("http://127.0.0.1:8000/v1", OutboundPolicy.parse(["127.0.0.1"])) is None


class _Counting(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        _Counting.hits.append(self.headers.get("Host", ""))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    """An HTTP server on loopback that counts what reaches it: the internal service."""
    _Counting.hits = []
    server = HTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`rebind.test` resolves to whatever the test says now (for the blocking and the
    event-loop resolver alike): public when the URL is saved, loopback when it is used."""
    answer = {"rebind.test": "93.184.216.34"}
    real = socket.getaddrinfo

    def fake(host: str, port: object, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host in answer:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[host], port or 0))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answer


def test_dns_that_changes_after_the_save_gains_nothing(backend: int, rebinding_dns: dict[str, str]) -> None:
    url = f"http://rebind.test:{backend}/v1/chat/completions"
    assert refusal(url, NOTHING_ALLOWED) is None  # public when saved
    rebinding_dns["rebind.test"] = "127.0.0.1"  # then it points inside

    async def call(pool: Http1Pool | HttpxUpstream) -> None:
        with pytest.raises(UpstreamRefused):
            await pool.send(url, b"{}", [], policy=NOTHING_ALLOWED)
        await pool.aclose()

    asyncio.run(call(Http1Pool()))
    asyncio.run(call(HttpxUpstream()))
    with pytest.raises(RefusedAddress):
        post_json(url, {"type": "budget.threshold_reached"}, NOTHING_ALLOWED, timeout=2)
    assert _Counting.hits == []  # nothing reached the internal service


def test_a_checked_call_never_reuses_a_replicas_connection(backend: int) -> None:
    """A replica's endpoint (from the control plane, unchecked) and a tenant's provider URL
    naming the same address: the provider's call is refused, not sent on the idle
    keep-alive connection the replica's call left."""
    url = f"http://127.0.0.1:{backend}/v1/chat/completions"

    async def scenario() -> None:
        upstreams = Upstreams(NOTHING_ALLOWED)
        replica_answer = await upstreams.send(url, b"{}", [])
        assert replica_answer.status == 200 and await replica_answer.read() == b'{"ok": true}'
        with pytest.raises(UpstreamRefused):
            await upstreams.send(url, b"{}", [], tenant_supplied=True)
        await upstreams.aclose()

    asyncio.run(scenario())
    assert len(_Counting.hits) == 1


def test_an_allowed_host_is_reached_at_the_checked_address_under_its_own_name(backend: int, rebinding_dns: dict[str, str]) -> None:
    rebinding_dns["provider.corp.test"] = "127.0.0.1"  # the operator's own network
    policy = OutboundPolicy.parse(["provider.corp.test"])
    url = f"http://provider.corp.test:{backend}/v1/chat/completions"

    async def scenario() -> None:
        for pool in (Http1Pool(), HttpxUpstream()):
            answer = await pool.send(url, b"{}", [], policy=policy)
            assert answer.status == 200 and await answer.read() == b'{"ok": true}'
            await pool.aclose()

    asyncio.run(scenario())
    post_json(url, {"type": "budget.threshold_reached"}, policy, timeout=2)
    assert _Counting.hits == [f"provider.corp.test:{backend}"] * 3  # each kept the name in its Host header


def test_pinning_keeps_the_port_path_and_name() -> None:
    assert pinned("https://api.test:8443/v1/x?y=1", "93.184.216.34") == ("https://93.184.216.34:8443/v1/x?y=1", "api.test:8443")
    assert pinned("https://api.test/v1", "2606:2800:220:1::1") == ("https://[2606:2800:220:1::1]/v1", "api.test")
