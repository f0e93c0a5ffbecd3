"""The console in a real browser: Playwright driving Debian's Chromium, headless,
against the ASGI server."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.browser import UNLABELLED_CONTROLS_JS, chromium

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _confirmation_path(email: str) -> str:
    """The confirmation link of the newest message to `email` in the server's outbox (no
    SMTP server here: mail is written to <data dir>/outbox/)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for message in sorted(Path(settings.EMAIL_FILE_PATH).glob("*.log"), key=lambda path: path.stat().st_mtime, reverse=True):
            text = message.read_text()
            if email in text and "/accounts/signup/confirm/" in text:
                link = re.search(r"https?://\S+/accounts/signup/confirm/\S+", text)
                assert link is not None
                return "/" + link.group(0).split("://", 1)[1].split("/", 1)[1]
        time.sleep(0.2)
    raise AssertionError(f"no confirmation email to {email}")


def test_sign_up_create_org_and_see_a_new_key_once(live_server_url: str) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{live_server_url}/accounts/signup/")
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        page.get_by_label("Email").fill("ada@example.test")
        page.get_by_label("Full name").fill("Ada Lovelace")
        page.get_by_label("Password", exact=True).fill("analytical-engine-1843")
        page.get_by_label("Password confirmation").fill("analytical-engine-1843")
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url(re.compile(r"/accounts/signup/sent/$"))  # the same answer for any address
        page.goto(live_server_url + _confirmation_path("ada@example.test"))  # from the email the server wrote

        page.wait_for_url(re.compile(r"/orgs/new/$"))
        page.get_by_label("Organization name").fill("Engine Works")
        page.get_by_role("button", name="Create organization").click()
        page.wait_for_url(re.compile(r"/o/engine-works/$"))
        assert page.get_by_role("heading", level=1).inner_text() == "Engine Works"

        page.get_by_role("navigation", name="Console").get_by_role("link", name="API keys").click()
        page.wait_for_url(re.compile(r"/o/engine-works/keys/$"))
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        assert page.evaluate("typeof window.htmx") == "object"  # served from node_modules, no CDN
        # An empty form answers 400 and the boosted page shows the field error.
        page.get_by_role("button", name="Create key").click()
        page.get_by_text("This field is required.").wait_for()
        page.get_by_label("Name").fill("notebook")
        page.get_by_label("Read (management API)").check()
        page.get_by_role("button", name="Create key").click()

        secret = page.get_by_test_id("new-key-secret").input_value()
        assert re.fullmatch(r"sbk_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}", secret)
        prefix_shown = page.get_by_test_id("key-prefix").inner_text()
        assert prefix_shown == f"{secret[:16]}…"

        page.reload()
        assert page.get_by_test_id("new-key-secret").count() == 0
        assert secret not in page.content()
        assert page.get_by_test_id("key-prefix").inner_text() == prefix_shown
        # Revoking asks first, then shows the new status in place.
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Revoke").click()
        page.get_by_text("revoked", exact=True).wait_for()
        revoked = secret
        # Keyboard users land on the content through the skip link.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
        browser.close()

    # The key shown once was real, and its revocation in the browser took effect.
    response = httpx.get(f"{live_server_url}/api/v1/organization/", headers={"Authorization": f"Bearer {revoked}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"


def test_console_is_readable_on_a_phone(live_server_url: str) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(f"{live_server_url}/accounts/signup/")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"page is {width}px wide on a 390px screen"


def test_the_api_reference_renders_under_the_content_security_policy(live_server_url: str) -> None:
    """Swagger UI starts from a script file, not an inline one, so the strict CSP holds
    (the browser helper fails the test on any violation)."""
    with chromium() as browser:
        page = browser.new_page()
        response = page.goto(f"{live_server_url}/api/v1/docs/")
        assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
        page.get_by_text("Switchboard management API").first.wait_for(timeout=15_000)
