"""The platform's internal surfaces answer the platform only: a cluster agent wants its
bearer token, a replica wants its own (deployments.internal_tokens); in-process, over
ASGI. The integration test checks the same against real agent and model-server
processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from deployments.agent import build_agent_app
from deployments.internal_tokens import agent_token, replica_token
from modelserver.auth import RequireApiKey

TOKEN = "t" * 48


def _get(app: object, method: str, path: str, headers: dict[str, str] | None = None, json: object = None) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as client:  # type: ignore[arg-type]
            return await client.request(method, path, headers=headers, json=json)

    return asyncio.run(call())


def test_the_agent_refuses_every_call_without_its_token(tmp_path: Path) -> None:
    app = build_agent_app("local-test", token=TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "agent.json")
    for method, path in (("GET", "/replicas"), ("POST", "/replicas"), ("DELETE", "/replicas/rep_x")):
        assert _get(app, method, path).status_code == 401
        assert _get(app, method, path, {"authorization": "Bearer " + "u" * 48}).status_code == 401
    own = {"authorization": f"Bearer {TOKEN}"}
    assert _get(app, "GET", "/replicas", own).json() == {"cluster": "local-test", "replicas": []}
    # A replica is only started with the token it must require.
    missing = _get(app, "POST", "/replicas", own, {"replica_id": "rep_x", "model": "tiny-chat", "options": {}})
    assert missing.status_code == 400 and "token" in missing.json()["error"]
    short = _get(app, "POST", "/replicas", own, {"replica_id": "rep_x", "model": "tiny-chat", "token": "short"})
    assert short.status_code == 400 and "32 characters" in short.json()["error"]


def test_an_agent_cannot_start_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs its token"):
        build_agent_app("local-test", token="", model_cache_dir=tmp_path, state_file=tmp_path / "agent.json")


def test_a_replica_answers_its_own_token_only_and_health_to_anyone() -> None:
    inner = Starlette(routes=[Route(path, lambda request: PlainTextResponse("ok")) for path in ("/health", "/metrics", "/v1/models")])
    app = RequireApiKey(inner, replica_token("rep_a"))
    assert _get(app, "GET", "/health").status_code == 200
    for path in ("/metrics", "/v1/models"):
        refused = _get(app, "GET", path)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert _get(app, "GET", path, {"authorization": f"Bearer {replica_token('rep_b')}"}).status_code == 401
        assert _get(app, "GET", path, {"authorization": f"Bearer {replica_token('rep_a')}"}).text == "ok"


@pytest.mark.django_db
def test_tokens_differ_by_cluster_and_replica_and_depend_on_the_secret(settings) -> None:  # type: ignore[no-untyped-def]
    assert len({agent_token("a"), agent_token("b"), replica_token("a"), replica_token("b")}) == 4
    before = replica_token("rep_a")
    settings.INTERNAL_SECRET = "another-install-" * 4
    assert replica_token("rep_a") != before
