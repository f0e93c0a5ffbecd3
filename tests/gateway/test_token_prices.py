"""Token prices are keyed on the model that answered, not on the name the caller used: a
route renamed, or a second route to the same provider model, moves no one between price
rules. The gateway's headers say what the invoice then charges, to the cent and below."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from billing import rating
from billing.models import InvoiceLine, ModelPrice, ProviderMarkup
from metering import dashboards
from metering.models import UsageEvent
from tests.conftest import Tenants
from tests.factories import create_route, issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import chat, provider_for, wait_for
from tests.helpers import session_api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MILLION = Decimal(1_000_000)


def _charged(response: httpx.Response) -> tuple[Decimal, Decimal, Decimal]:
    """The prices per million tokens and the cost the answer's headers state."""
    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-billed-by"] == "tokens"
    return (
        Decimal(response.headers["x-switchboard-input-price-per-mtok"]),
        Decimal(response.headers["x-switchboard-output-price-per-mtok"]),
        Decimal(response.headers["x-switchboard-cost-usd"]),
    )


def test_the_model_served_is_priced_whatever_the_route_is_called(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    org = tenants.org_a
    long_ago = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=40)
    ModelPrice.objects.create(
        model="bench-model", input_price_per_mtok=Decimal(2), output_price_per_mtok=Decimal(6), effective_from=long_ago
    )
    ProviderMarkup.objects.create(percent=Decimal(25), effective_from=long_ago)
    provider = provider_for(org, backends[0], input_price="0.5", output_price="1.5")
    # Three names for one priced model, and one route to a model the book does not price.
    for name in ("bench-model", "assistant", "cheap-sounding-name"):
        create_route(org, name, targets=[((provider, "bench-model"), 100)])
    create_route(org, "unpriced", targets=[((provider, "other-model"), 100)])
    key = issue_key(org).plaintext

    answers = {name: chat(gateway, key, name, max_tokens=5) for name in ("bench-model", "assistant", "cheap-sounding-name", "unpriced")}
    for name in ("bench-model", "assistant", "cheap-sounding-name"):
        input_price, output_price, cost = _charged(answers[name])
        usage = answers[name].json()["usage"]
        assert (input_price, output_price) == (Decimal(2), Decimal(6)), name  # the book's price for the model served
        assert cost == (usage["prompt_tokens"] * input_price + usage["completion_tokens"] * output_price) / MILLION
    input_price, output_price, cost = _charged(answers["unpriced"])
    assert (input_price, output_price) == (Decimal("0.625"), Decimal("1.875"))  # the provider's cost with the 25% markup

    ids = [answer.headers["x-request-id"] for answer in answers.values()]
    recorded = UsageEvent.objects.for_org(org).filter(request_id__in=ids)
    wait_for(lambda: recorded.count() == len(ids), timeout=30)
    events = list(recorded)
    assert sorted((event.model, event.served_model) for event in events) == [
        ("assistant", "bench-model"),
        ("bench-model", "bench-model"),
        ("cheap-sounding-name", "bench-model"),
        ("unpriced", "other-model"),
    ]

    # The invoice: one line per direction for the priced model, whatever the three were
    # called, and the markup line for the other; exactly what the headers said.
    now = timezone.now()
    lines = rating.rate(
        org, rating.month_start(min(event.at for event in events)), now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    )
    token_lines = {line.description for line in lines if line.kind == InvoiceLine.Kind.TOKENS}
    assert token_lines == {"bench-model: input tokens", "bench-model: output tokens"}
    assert [line.description for line in lines if line.kind == InvoiceLine.Kind.PROVIDER] == ["other-model: external provider cost + 25%"]
    charged = sum(_charged(answer)[2] for answer in answers.values())
    assert sum(line.exact_amount for line in lines) == charged
    # The Usage page, the usage API and the events export state the same charge, not the
    # provider's cost (which they keep apart, as provider_cost).
    dashboard = dashboards.usage_dashboard(org, dashboards.DashboardParams(range="24h"), show_cost=True)
    assert Decimal(dashboard["totals"]["cost"]) == charged
    admin = session_api(tenants.owner_a, org)
    assert Decimal(admin.get("/api/v1/usage/").json()["totals"]["cost"]) == charged
    rows = list(csv.DictReader(io.StringIO(b"".join(admin.get("/api/v1/usage/events.csv").streaming_content).decode())))
    by_id = {row["request_id"]: row for row in rows}
    for answer in answers.values():
        row = by_id[answer.headers["x-request-id"]]
        assert Decimal(row["cost"]) == _charged(answer)[2]
        usage = answer.json()["usage"]
        assert (
            Decimal(row["provider_cost"])
            == (usage["prompt_tokens"] * Decimal("0.5") + usage["completion_tokens"] * Decimal("1.5")) / MILLION
        )
    # The other tenant pays nothing for any of it.
    assert rating.rate(tenants.org_b, rating.month_start(now), now + timedelta(hours=1)) == []
