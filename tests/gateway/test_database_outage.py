"""A database outage of a few seconds: keys already seen keep working from the cache,
unseen ones get 503 (never 401), usage written during the outage is not lost, and the
gateway recovers by itself. Runs where the database is a server (PostgreSQL) that a TCP
proxy can cut off."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from metering.models import UsageEvent
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import chat, provider_for, route_to, wait_for
from tests.servers import asgi_server, child_database_url, child_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor == "sqlite", reason="the embedded database is a local file; there is no server to lose"),
]


class CuttableProxy:
    """Forwards TCP to the database until cut; cutting drops every connection and refuses
    new ones, as a network partition or a database restart would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.pipes: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                pipe = threading.Thread(target=self._pipe, args=(source, sink), daemon=True)
                pipe.start()
                self.pipes.append(pipe)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown, not just close: it wakes the other direction's thread from recv.
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def cut(self) -> None:
        self.up = False
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.up = False
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for pipe in self.pipes:
            pipe.join(timeout=5)
        time.sleep(0.2)  # PostgreSQL ends the sessions of the closed connections


def test_valid_keys_survive_a_database_outage_and_nothing_is_lost(tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    seen, unseen = issue_key(tenants.org_a).plaintext, issue_key(tenants.org_a, name="unseen").plaintext
    database = urlsplit(child_database_url())
    proxy = CuttableProxy(database.hostname or "127.0.0.1", database.port or 5432)
    proxied = urlunsplit(database._replace(netloc=f"{database.username or 'postgres'}@127.0.0.1:{proxy.port}"))
    try:
        _outage(tenants, proxy, proxied, seen, unseen)
    finally:
        proxy.close()


def _outage(tenants: Tenants, proxy: CuttableProxy, proxied: str, seen: str, unseen: str) -> None:
    with asgi_server(child_env(DATABASE_URL=proxied)) as gateway:
        assert chat(gateway, seen, "chat-default").status_code == 200
        wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).count() == 1)

        proxy.cut()
        outage_started = time.monotonic()
        during = []
        while time.monotonic() - outage_started < 5.0:  # past the key and route cache times
            during.append(chat(gateway, seen, "chat-default"))
            time.sleep(0.25)
        refused = chat(gateway, unseen, "chat-default")
        assert {r.status_code for r in during} == {200}, [r.text for r in during if r.status_code != 200][:1]
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "database_unavailable"

        proxy.restore()
        wait_for(lambda: chat(gateway, unseen, "chat-default").status_code == 200, timeout=15, interval=0.5)
        # Every answered request of the outage was written once the database came back.
        answered = {r.headers["x-request-id"] for r in during}
        wait_for(lambda: answered <= set(UsageEvent.objects.for_org(tenants.org_a).values_list("request_id", flat=True)), timeout=15)
