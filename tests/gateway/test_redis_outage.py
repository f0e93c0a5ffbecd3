"""Redis lost under gateway traffic (cut off for five seconds, as a restart or a partition
looks to its clients): the gateway answers no 500, refuses what it cannot count with 503
and Retry-After, serves again by itself once Redis is back, and every request it answered
200 has its usage event stored once. Runs on the PostgreSQL + Redis stack."""

from __future__ import annotations

import os
import time
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from metering.models import UsageEvent
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import chat, provider_for, route_to, wait_for
from tests.gateway.test_database_outage import CuttableProxy
from tests.servers import asgi_server, child_database_url, child_env, usage_ingester

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the embedded stack has no Redis to lose"),
]

OUTAGE_S = 5.0
RECOVERY_S = 20.0  # the stated bound: serving again within this after Redis is back


def test_a_redis_outage_answers_503_not_500_and_recovers(tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    key = issue_key(tenants.org_a).plaintext
    redis = urlsplit(os.environ["REDIS_URL"])
    proxy = CuttableProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    proxied = urlunsplit(redis._replace(netloc=f"127.0.0.1:{proxy.port}"))
    answers: list[httpx.Response] = []
    try:
        database = child_database_url()
        with (
            usage_ingester(child_env(DATABASE_URL=database)),
            asgi_server(child_env(DATABASE_URL=database, REDIS_URL=proxied)) as gateway,
        ):
            assert chat(gateway, key, "chat-default").status_code == 200
            proxy.cut()
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE_S:
                answers.append(chat(gateway, key, "chat-default"))
                time.sleep(0.2)
            proxy.restore()
            restored = time.monotonic()
            wait_for(lambda: chat(gateway, key, "chat-default").status_code == 200, timeout=RECOVERY_S, interval=0.5)
            recovery_s = time.monotonic() - restored
    finally:
        proxy.close()
    statuses = Counter(answer.status_code for answer in answers)
    print(f"during the outage: {dict(statuses)}; serving again {recovery_s:.1f} s after Redis came back")
    assert set(statuses) <= {200, 503}, [answer.text for answer in answers if answer.status_code not in (200, 503)][:2]
    for refused in (answer for answer in answers if answer.status_code == 503):
        assert refused.headers.get("retry-after") and refused.json()["error"]["message"]
    served = [answer.headers["x-request-id"] for answer in answers if answer.status_code == 200]
    stored = Counter(UsageEvent.objects.for_org(tenants.org_a).filter(request_id__in=served).values_list("request_id", flat=True))
    wait_for(
        lambda: (
            len(Counter(UsageEvent.objects.for_org(tenants.org_a).filter(request_id__in=served).values_list("request_id", flat=True)))
            == len(served)
        ),
        timeout=30,
    )
    assert all(count == 1 for count in stored.values())
