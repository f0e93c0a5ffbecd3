"""The official openai SDK against the running gateway: chat (streamed and not),
completions, embeddings and models, through external-provider targets and through a
deployment whose replica is a real model server."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from metering.models import UsageEvent
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import client, deployment_with_replicas, provider_for, route_to, wait_for
from tests.servers import model_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_chat_completions_embeddings_and_models_through_a_provider(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    sdk = client(gateway, issue_key(tenants.org_a).plaintext)

    raw = sdk.chat.completions.with_raw_response.create(model="chat-default", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from the benchmark backend."
    assert answer.usage.completion_tokens == 7
    assert raw.headers["x-switchboard-route"] == "chat-default"
    assert raw.headers["x-switchboard-target"] == "provider:alpha-us-east/bench-model"
    assert raw.headers["x-switchboard-region"] == "us-east"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-limit-requests"] and raw.headers["x-ratelimit-remaining-tokens"]

    chunks = list(sdk.chat.completions.create(model="chat-default", messages=[{"role": "user", "content": "Hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the benchmark backend."
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage

    with_usage = list(
        sdk.chat.completions.create(
            model="chat-default", messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 5

    completion = sdk.completions.create(model="chat-default", prompt="Once upon a time", max_tokens=8)
    assert completion.choices[0].text == "Hello from the benchmark backend."
    streamed = list(sdk.completions.create(model="chat-default", prompt="Once upon a time", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "Hello from the benchmark backend."

    embeddings = sdk.embeddings.create(model="chat-default", input=["one", "two"])
    assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) == 8

    assert [m.id for m in sdk.models.list()] == ["chat-default"]
    assert sdk.models.retrieve("chat-default").id == "chat-default"

    # Every inference call left one usage event, streams counted too.
    events = wait_for(
        lambda: (
            list(UsageEvent.objects.for_org(tenants.org_a).order_by("at"))
            if UsageEvent.objects.for_org(tenants.org_a).count() == 6
            else None
        )
    )
    assert [e.streamed for e in events] == [False, True, True, False, True, False]
    assert [e.output_tokens for e in events][:3] == [7, 5, 5]
    assert all(e.status == 200 and e.route == "chat-default" and e.region == "us-east" for e in events)
    first = events[0]
    assert first.cost == (first.input_tokens * Decimal("0.5") + 7 * Decimal("1.5")) / 1_000_000


@pytest.fixture(scope="module")
def tiny_chat() -> Iterator[str]:
    with model_server("tiny-chat") as (url, _):
        yield url


def test_a_deployment_name_reaches_a_real_model_server(gateway: str, tenants: Tenants, tiny_chat: str) -> None:
    deployment_with_replicas(tenants.org_a, "tiny", [(tiny_chat, "local-us-east")])
    sdk = client(gateway, issue_key(tenants.org_a).plaintext)

    raw = sdk.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0
    )
    answer = raw.parse()
    assert answer.usage.completion_tokens >= 1 and answer.usage.prompt_tokens > 1
    # Billed by its replicas' GPU time at the book's CPU price per hour, not per token.
    assert raw.headers["x-switchboard-billed-by"] == "gpu-time" and raw.headers["x-switchboard-gpu-price-per-hour"] == "0.1785"
    assert raw.headers["x-switchboard-cost-usd"] == "0" and "x-switchboard-input-price-per-mtok" not in raw.headers
    assert answer.choices[0].message.content

    chunks = list(
        sdk.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert all(c.usage is None for c in chunks)

    event = wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).filter(streamed=True).first())
    assert event.output_tokens == answer.usage.completion_tokens
    assert event.target == "deployment:tiny" and event.deployment_id
    assert event.cost == 0  # a dedicated deployment's requests are not charged per token
    assert [m.id for m in sdk.models.list()] == ["tiny"]
