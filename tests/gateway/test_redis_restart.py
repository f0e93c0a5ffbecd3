"""Redis restarted under gateway traffic (a redis-server of the test's own, stopped with
SIGTERM and started again five seconds later): the gateway answers no 500, refuses what it
cannot count with 503 and Retry-After, serves again by itself once Redis is back, and
every request it answered 200 has its usage event stored once. Runs on the PostgreSQL +
Redis stack."""

from __future__ import annotations

import os
import time
from collections import Counter

import httpx
import pytest

from metering.models import UsageEvent
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import chat, provider_for, route_to, wait_for
from tests.servers import asgi_server, child_database_url, child_env, usage_ingester
from tests.service_processes import private_redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the embedded stack has no Redis to restart"),
]

OUTAGE_S = 5.0
RECOVERY_S = 20.0  # the stated bound: serving again within this after Redis is back


def test_a_redis_restart_answers_503_not_500_and_recovers(tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    key = issue_key(tenants.org_a).plaintext
    answers: list[httpx.Response] = []
    database = child_database_url()
    with private_redis() as redis_server:
        env = child_env(DATABASE_URL=database, REDIS_URL=redis_server.url)
        with usage_ingester(env), asgi_server(env) as gateway:
            answers.append(chat(gateway, key, "chat-default"))
            redis_server.stop()
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE_S:
                answers.append(chat(gateway, key, "chat-default"))
                time.sleep(0.2)
            redis_server.start()
            restarted = time.monotonic()
            wait_for(lambda: chat(gateway, key, "chat-default").status_code == 200, timeout=RECOVERY_S, interval=0.5)
            recovery_s = time.monotonic() - restarted
            answers += [chat(gateway, key, "chat-default") for _ in range(3)]

            # Served during the outage, spooled, then stored by the ingester: every one, once.
            served = [answer.headers["x-request-id"] for answer in answers if answer.status_code == 200]

            def stored() -> Counter[str]:
                rows = UsageEvent.objects.for_org(tenants.org_a).filter(request_id__in=served)
                return Counter(rows.values_list("request_id", flat=True))

            wait_for(lambda: len(stored()) == len(served), timeout=30)
    statuses = Counter(answer.status_code for answer in answers)
    print(f"while Redis was down: {dict(statuses)}; serving again {recovery_s:.1f} s after it restarted")
    assert set(statuses) <= {200, 503}, [answer.text for answer in answers if answer.status_code not in (200, 503)][:2]
    for refused in (answer for answer in answers if answer.status_code == 503):
        assert refused.headers.get("retry-after") and refused.json()["error"]["message"]
    assert recovery_s < RECOVERY_S
    assert sorted(stored()) == sorted(served) and set(stored().values()) == {1}
