"""Hypothesis-generated requests to the gateway's /v1 endpoints, in-process (the real
Gateway, a well-behaved scripted upstream): whatever the body (not JSON, the wrong JSON,
plausible requests with wrong types, extra fields, nulls, huge numbers, unknown models,
another tenant's route), the answer is never a 5xx, and every refusal is OpenAI's error
shape with a message. Derandomized for CI; `FUZZ_EXAMPLES` raises the bound."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.gateway.pool import UpstreamResponse
from tests.gateway.test_in_process import Harness, ScriptedResponse, _ok, _route, _sse, _target

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6")) * 50
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/nothing"]
FIELDS = [
    "model", "messages", "prompt", "input", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "n", "stop", "seed", "user", "logprobs", "tools", "response_format", "dimensions",
]  # fmt: skip


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # the standard library's: integers of any size


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", ""]), "content": json_values}), max_size=3
)
plausible = st.fixed_dictionaries(
    {"model": st.sampled_from(["chat", "globex-private", "", "nope"]) | json_values},
    optional={name: (messages if name == "messages" else json_values) for name in FIELDS if name != "model"},
)
bodies = (
    plausible.map(_dumps)
    | json_values.map(_dumps)
    | st.binary(max_size=64)
    | st.just(b"")
    | st.just(b"{" * 200)
    | st.just(b'{"model": "chat", "messages": [' + b'{"role": "user", "content": "x"},' * 200 + b"{}]}")
)


class AlwaysAnswers:
    """An upstream that answers every request well: any 5xx is then the gateway's own."""

    async def send(self, url: str, body: bytes, headers: list[tuple[bytes, bytes]], *, tenant_supplied: bool = False) -> UpstreamResponse:
        if orjson.loads(body).get("stream") is True:
            chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
            return ScriptedResponse(200, _sse(chunk, usage))
        return _ok()

    async def aclose(self) -> None:
        pass


HARNESS = Harness(AlwaysAnswers(), _route("chat", _target("a", "http://a.test")))  # type: ignore[arg-type]


def _send(path: str, body: bytes, key: str) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=HARNESS.gateway), base_url="http://gateway.test") as client:
            method = "GET" if path == "/v1/models" else "POST"
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            return await client.request(method, path, content=body, headers=headers)

    return asyncio.run(call())


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(PATHS), body=bodies, key=st.sampled_from(["sbk_acme", "sbk_globex", "sbk_nobody"]))
def test_no_body_makes_the_gateway_answer_5xx(path: str, body: bytes, key: str) -> None:
    response = _send(path, body, key)
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        error: Any = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and error["type"] and "code" in error
