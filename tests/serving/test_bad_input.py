"""Requests a model server cannot serve get an OpenAI-style 4xx saying what to fix."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

CHAT = "tiny-chat"
EMBED = "tiny-embedding"


def _chat(**overrides: object) -> dict[str, object]:
    return {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **overrides}


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (_chat(messages=[]), "messages", "at least 1 item"),
        (_chat(messages="hi"), "messages", "valid list"),
        (_chat(messages=[{"role": "user", "content": 5}]), "messages.0.content", "valid string"),
        (_chat(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role", "'user'"),
        (_chat(messages=[{"content": "hi"}]), "messages.0.role", "Field required"),
        (_chat(max_tokens="10"), "max_tokens", "valid integer"),
        (_chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (_chat(max_tokens=100_000), "max_tokens", "at most"),
        (_chat(max_completion_tokens=100_000), "max_completion_tokens", "at most"),
        (_chat(temperature=3), "temperature", "less than or equal to 2"),
        (_chat(temperature="hot"), "temperature", "valid number"),
        (_chat(top_p=0), "top_p", "greater than 0"),
        (_chat(n=2), "n", "less than or equal to 1"),
        (_chat(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (_chat(stream="yes"), "stream", "valid boolean"),
        (_chat(stream_options={"include_usage": True}), "stream_options", "only allowed when `stream` is true"),
        (_chat(logprobs=True), "logprobs", "`logprobs` is not supported"),
        (_chat(tools=[{"type": "function"}]), "tools", "`tools` is not supported"),
        (_chat(stop=[""]), "stop", "must not be empty"),
        (_chat(messages=[{"role": "user", "content": "word " * 600}], max_tokens=None), "messages", "context length is 512"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", "Field required"),
    ],
)
def test_chat_input_errors(tiny_chat_server: str, body: dict[str, object], param: str | None, fragment: str) -> None:
    body = {key: value for key, value in body.items() if value is not None}
    response = httpx.post(tiny_chat_server + "/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param  # every refusal names what to fix
    assert fragment in error["message"], error["message"]


def test_null_means_the_default_wherever_openai_allows_it(tiny_chat_server: str) -> None:
    """OpenAI's reference lets these be null; the official SDK sends them so."""
    body = _chat(temperature=None, top_p=None, n=None, stream=None, seed=None, stop=None, presence_penalty=None, logprobs=None)
    response = httpx.post(tiny_chat_server + "/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": EMBED, "input": ""}, "input is empty"),
        ({"model": EMBED, "input": ["ok", ""]}, "input[1] is empty"),
        ({"model": EMBED, "input": [1, 2, 3]}, "valid string"),
        ({"model": EMBED, "input": []}, "at least 1 item"),
        ({"model": EMBED, "input": ["x"] * 2049}, "at most 2048"),
        ({"model": EMBED, "input": "word " * 200}, "takes at most 128"),
        ({"model": EMBED, "input": ["fine", "word " * 200]}, "input[1] has"),
        ({"model": EMBED, "input": "x", "encoding_format": "hex"}, "'float' or 'base64'"),
        ({"model": EMBED, "input": "x", "dimensions": 8}, "returns 32 dimensions"),
    ],
)
def test_embedding_input_errors(tiny_embedding_server: str, body: dict[str, object], fragment: str) -> None:
    response = httpx.post(tiny_embedding_server + "/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_malformed_bodies(tiny_chat_server: str) -> None:
    for raw in (b"{", b"not json", b"\xff\xfe", b"[1, 2]", b"null"):
        response = httpx.post(tiny_chat_server + "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    huge = httpx.post(tiny_chat_server + "/v1/chat/completions", content=b"x" * (5 * 1024 * 1024))
    assert huge.status_code == 413 and "limit" in huge.json()["error"]["message"]


def test_wrong_model_and_wrong_endpoint(tiny_chat_server: str, tiny_embedding_server: str) -> None:
    response = httpx.post(tiny_chat_server + "/v1/chat/completions", json=_chat(model="gpt-4o"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = httpx.post(tiny_chat_server + "/v1/embeddings", json={"model": CHAT, "input": "x"})
    assert response.status_code == 400 and "not served by tiny-chat" in response.json()["error"]["message"]
    response = httpx.post(tiny_embedding_server + "/v1/chat/completions", json=_chat(model=EMBED))
    assert response.status_code == 400 and "embedding model" in response.json()["error"]["message"]
    assert httpx.get(tiny_chat_server + "/v1/chat/completions").status_code == 405
    assert httpx.get(tiny_chat_server + "/v2/anything").json()["error"]["code"] == "not_found"


def test_the_sdk_raises_its_own_exception_classes(tiny_chat_server: str) -> None:
    client = openai.OpenAI(base_url=tiny_chat_server + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=CHAT, messages=[], max_tokens=2)
    assert bad.value.param == "messages"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_a_vanishing_temperature_is_greedy_and_breaks_nothing(tiny_chat_server: str) -> None:
    response = httpx.post(tiny_chat_server + "/v1/chat/completions", json=_chat(temperature=1e-39, max_tokens=3))
    assert response.status_code == 200
    greedy = httpx.post(tiny_chat_server + "/v1/chat/completions", json=_chat(temperature=0, max_tokens=3))
    assert response.json()["choices"][0]["message"]["content"] == greedy.json()["choices"][0]["message"]["content"]
    assert httpx.get(tiny_chat_server + "/health").status_code == 200
