from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.stripe_server import StripeHTTPServer, running_stripe_server

SECRET_KEY = "sk_test_switchboard0000000000"
WEBHOOK_SECRET = "whsec_test_switchboard0000000000"


class StripeDouble:
    """The running test double, driven through its admin endpoints."""

    def __init__(self, server: StripeHTTPServer) -> None:
        self.server = server
        self.url = server.url

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.url}/_admin/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._admin("POST", "reset")

    def outage(self, mode: str, count: int | None = None, path: str = "") -> None:
        self._admin("POST", "outage", {"mode": mode, "count": count, "path": path})

    def clock(self, offset_seconds: int) -> None:
        self._admin("POST", "clock", {"offset": offset_seconds})

    def meter_events(self) -> dict[str, Any]:
        return self._admin("GET", "meter_events")

    def customer_totals(self, customer_id: str) -> dict[str, int]:
        return self.meter_events()["customers"].get(customer_id, {"count": 0, "raw_sum": 0, "billed_sum": 0})

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        made = self._admin("GET", "requests")["requests"]
        return [request for request in made if path is None or request["path"] == path]

    def state(self) -> dict[str, Any]:
        return self._admin("GET", "state")

    def lose_meter_event(self, identifier: str) -> bool:
        return bool(self._admin("POST", "meter_events/lose", {"identifier": identifier})["lost"])

    def invoice_items(self) -> list[dict[str, Any]]:
        return list(self.state()["invoice_items"].values())

    def complete_checkout(self, session_id: str, *, delayed: bool = False) -> dict[str, Any]:
        return self._admin("POST", f"checkout/{session_id}/complete", {"delayed": True} if delayed else None)

    def settle_checkout(self, session_id: str) -> dict[str, Any]:
        """A delayed payment of a completed session succeeds."""
        return self._admin("POST", f"checkout/{session_id}/settle")


@pytest.fixture(scope="session")
def stripe_double_server() -> Iterator[StripeHTTPServer]:
    with running_stripe_server() as server:
        yield server


@pytest.fixture
def stripe_double(stripe_double_server: StripeHTTPServer, settings: Any) -> StripeDouble:
    """Stripe switched on against a fresh test double."""
    double = StripeDouble(stripe_double_server)
    double.reset()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = double.url
    # The ledger retries on the next run; retries inside the library would only slow the
    # outage tests down.
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    return double


@pytest.fixture
def stripe_off(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_WEBHOOK_SECRET = ""
    settings.STRIPE_API_BASE = None
