"""The Admin console in a real browser (Playwright, Debian Chromium) against the running
ASGI server: a staff user signs in, sets a tenant's requests-per-minute quota to 2, and
through the gateway, with the openai SDK, the tenant's third request that minute gets 429."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from deployments.models import Quota
from tenancy.models import AuditEntry, User
from tests.browser import UNLABELLED_CONTROLS_JS, chromium
from tests.conftest import Tenants
from tests.factories import PASSWORD, UserFactory, issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import client, provider_for, route_to

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _staff_user() -> User:
    user = UserFactory(email="ops@switchboard.test", is_staff=True)
    # The server hashes with the production hashers, not the tests' fast one.
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])
    return user


def _chat(sdk: openai.OpenAI):  # type: ignore[no-untyped-def]
    return sdk.chat.completions.with_raw_response.create(
        model="chat-default", messages=[{"role": "user", "content": "Hello there"}], max_tokens=8
    )


def test_staff_sets_rpm_to_2_and_the_third_request_that_minute_gets_429(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    orm = ThreadPoolExecutor(1)  # ORM work off Playwright's thread (it runs an event loop)

    def setup() -> str:
        route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
        _staff_user()
        return issue_key(tenants.org_a, ["inference"]).plaintext

    key = orm.submit(setup).result()
    sdk = client(gateway, key)
    # The gateway has the organization cached with the default quota.
    warm = _chat(sdk)
    assert warm.headers["x-ratelimit-limit-requests"] == "600"

    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{gateway}/accounts/login/")
        page.get_by_label("Email").fill("ops@switchboard.test")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Sign out").wait_for()  # signed in (the form is boosted: no full navigation)

        page.goto(f"{gateway}/staff/")
        page.get_by_role("link", name="Acme").click()
        page.wait_for_url(re.compile(rf"/staff/tenants/{tenants.org_a.pk}/$"))
        page.get_by_role("link", name="Edit quotas").click()
        page.wait_for_url(re.compile(rf"/staff/tenants/{tenants.org_a.pk}/quota/$"))
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        field = page.get_by_label("Requests per minute", exact=True)
        assert field.input_value() == "600"
        field.fill("2")
        page.get_by_role("button", name="Save quotas").click()
        page.get_by_text("Quotas of Acme saved.").wait_for()
        saved_at = time.monotonic()
        assert page.get_by_label("Requests per minute", exact=True).input_value() == "2"
        browser.close()

    quota, entry = orm.submit(
        lambda: (Quota.objects.for_org(tenants.org_a).get(), AuditEntry.objects.for_org(tenants.org_a).get(action="quota.changed"))
    ).result()
    assert quota.requests_per_minute == 2
    assert (
        entry.actor_label == "ops@switchboard.test (platform staff)"
        and entry.before["requests_per_minute"] == 600
        and entry.after["requests_per_minute"] == 2
    )

    # The gateway re-reads an organization once its snapshot is older than the cache
    # time; no request is made meanwhile, so none is spent under the old quota.
    time.sleep(max(0.0, saved_at + settings.GATEWAY_ROUTES_CACHE_SECONDS + 1.0 - time.monotonic()))
    first = _chat(sdk)
    assert first.headers["x-ratelimit-limit-requests"] == "2" and first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.parse().choices[0].message.content
    second = _chat(sdk)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(sdk)
    assert refused.value.status_code == 429
    assert refused.value.response.headers["x-ratelimit-limit-requests"] == "2"
    assert "requests per minute" in refused.value.message and refused.value.code == "rate_limit_requests"
    assert backends[0].requests == 3  # the warm-up and the two served; the third never left the gateway
    orm.shutdown()
