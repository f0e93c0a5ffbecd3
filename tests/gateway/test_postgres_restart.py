"""PostgreSQL restarted under console, API and ingest load (a server of the test's own,
holding a copy of the test database, stopped with `pg_ctl -m fast` and started again four
seconds later). Expected, and asserted:

- no 500 anywhere: console pages and the API answer 503 with Retry-After while it is down;
  the gateway keeps serving keys it has seen (from its cache) and spools their usage;
- console, API and gateway serve again within RECOVERY_S of the restart, by themselves;
- the usage ingester survives, and every gateway request answered 200 is stored once.

Runs on the PostgreSQL + Redis stack."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import psycopg
import pytest
from django.db import connection
from django.test import Client

from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import chat, provider_for, route_to, wait_for
from tests.servers import asgi_server, child_database_url, child_env, usage_ingester
from tests.service_processes import private_postgres

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor == "sqlite", reason="the embedded database is a local file; there is no server to restart"),
]

DOWN_S = 4.0
RECOVERY_S = 20.0  # the stated bound: everything serves again within this after PostgreSQL is back


class Load:
    """Three callers at a person's pace, recording every answer until stopped."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, float, httpx.Response | None]] = []
        self.running = True
        self.threads: list[threading.Thread] = []

    def start(self, kind: str, call: Callable[[], httpx.Response]) -> None:
        def loop() -> None:
            while self.running:
                try:
                    answer: httpx.Response | None = call()
                except httpx.HTTPError:
                    answer = None
                self.answers.append((kind, time.monotonic(), answer))
                time.sleep(0.1)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(timeout=35)


def test_a_postgresql_restart_answers_503_not_500_and_loses_no_usage(tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    inference = issue_key(tenants.org_a).plaintext
    api_key = issue_key(tenants.org_a, name="api", scopes=["read", "write"]).plaintext
    browser = Client()
    browser.force_login(tenants.owner_a)
    session = {"sessionid": browser.cookies["sessionid"].value}

    with private_postgres() as server:
        database = server.copy_database(child_database_url(), "switchboard_restart")
        env = child_env(DATABASE_URL=database)
        with usage_ingester(env) as ingester, asgi_server(env) as base:
            console = httpx.Client(base_url=base, cookies=session, timeout=30)
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
            assert console.get("/o/acme/usage/").status_code == 200
            assert chat(base, inference, "chat-default").status_code == 200  # the gateway has now seen the key

            load = Load()
            load.start("console", lambda: console.get("/o/acme/usage/"))
            load.start("api", lambda: api.get("/api/v1/keys/"))
            load.start("gateway", lambda: chat(base, inference, "chat-default"))
            time.sleep(1)
            server.stop()
            down_at = time.monotonic()
            time.sleep(DOWN_S)
            server.start()
            up_at = time.monotonic()
            wait_for(
                lambda: any(kind == "console" and at > up_at and a is not None and a.status_code == 200 for kind, at, a in load.answers),
                timeout=RECOVERY_S,
            )
            recovery_s = time.monotonic() - up_at
            time.sleep(2)
            load.stop()
            assert ingester.poll() is None, "the usage ingester died"

            served = [a.headers["x-request-id"] for kind, _, a in load.answers if kind == "gateway" and a is not None and a.is_success]
            with psycopg.connect(database) as db:

                def stored() -> Counter[str]:
                    rows = db.execute("SELECT request_id FROM billing_usageevent WHERE request_id = ANY(%s)", [served]).fetchall()
                    db.commit()
                    return Counter(row[0] for row in rows)

                wait_for(lambda: len(stored()) == len(served), timeout=30, interval=0.5)
                counts = stored()

    during = Counter(f"{kind} {a.status_code if a else 'no answer'}" for kind, at, a in load.answers if down_at <= at <= up_at)
    print(f"while PostgreSQL was down: {dict(during)}; console serving {recovery_s:.1f} s after it was back; {len(served)} served")
    statuses = {a.status_code if a is not None else 0 for _, _, a in load.answers}
    assert statuses <= {200, 503}, Counter(f"{kind} {a.status_code if a else 0}" for kind, _, a in load.answers)
    for kind, _, answer in load.answers:
        if answer is not None and answer.status_code == 503:
            assert answer.headers.get("retry-after"), (kind, answer.text[:200])
    assert {"console 503", "api 503"} <= set(during), during  # the outage was seen, and answered as one
    recovered = {kind for kind, at, a in load.answers if at > up_at + recovery_s and a is not None and a.status_code == 200}
    assert recovered == {"console", "api", "gateway"}
    assert sorted(counts) == sorted(served) and set(counts.values()) == {1}
