"""Reading a request: the body within its size limit, the JSON checked field by field
(errors name the field at fault), and the token bounds that limits and spend reserve."""

from __future__ import annotations

from typing import Any

import orjson

from routing.gateway.errors import GatewayError, bad_request
from routing.gateway.exchange import Receive

# path -> the endpoint's name, which is also the upstream path suffix
INFERENCE_PATHS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
DEFAULT_OUTPUT_RESERVATION = 256  # tokens reserved when a request names no max_tokens
_REQUIRED_INPUT = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}


async def read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "The client disconnected before sending the whole body.", "incomplete_body")
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise too_large(limit)
        chunks.append(part)
    return b"".join(chunks)


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than the limit of {limit} bytes; send less.", "request_too_large")


def parse(body: bytes, endpoint: str) -> dict[str, Any]:
    """The request as a dict, with the fields the gateway relies on checked."""
    if not body:
        raise bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"The request body is not valid JSON: {error}.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string naming a route or deployment.", "invalid_model", "model")
    _check_input(payload, endpoint)
    _check_options(payload, endpoint)
    return payload


def _check_input(payload: dict[str, Any], endpoint: str) -> None:
    field = _REQUIRED_INPUT[endpoint]
    value = payload.get(field)
    if endpoint == "chat/completions":
        if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
            raise bad_request("'messages' is required: a non-empty list of message objects.", "invalid_messages", "messages")
    elif not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
        raise bad_request(f"'{field}' is required: a string or a non-empty list.", f"invalid_{field}", field)


def _check_options(payload: dict[str, Any], endpoint: str) -> None:
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.", "invalid_stream", "stream")
    if stream and endpoint == "embeddings":
        raise bad_request("Embeddings cannot be streamed; leave out 'stream'.", "invalid_stream", "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "invalid_stream_options", "stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        limit = payload.get(name)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise bad_request(f"'{name}' must be a positive integer.", f"invalid_{name}", name)


def _output_bound(payload: dict[str, Any], endpoint: str) -> int:
    if endpoint == "embeddings":
        return 0
    return int(payload.get("max_completion_tokens") or payload.get("max_tokens") or DEFAULT_OUTPUT_RESERVATION)


def prompt_estimate(payload: dict[str, Any], endpoint: str) -> int:
    """Prompt characters / 4, plus one: the usual estimate of a prompt's tokens."""
    if endpoint == "chat/completions":
        chars = sum(len(str(m.get("content") or "")) for m in payload["messages"])
    else:
        value: Any = payload.get(_REQUIRED_INPUT[endpoint])
        chars = len(value) if isinstance(value, str) else sum(len(str(item)) for item in value)
    return chars // 4 + 1


def token_estimate(payload: dict[str, Any], endpoint: str) -> int:
    """The prompt's estimate plus the most the answer may use: what the TPM limit reserves."""
    return prompt_estimate(payload, endpoint) + _output_bound(payload, endpoint)


def spend_token_bounds(payload: dict[str, Any], endpoint: str) -> tuple[int, int]:
    """Upper bounds on the tokens a request can be charged for: a token is at least one
    byte of text (plus a few for each chat message's template), and the answer at most
    max_tokens."""
    if endpoint == "chat/completions":
        prompt = sum(len(str(m.get("content") or "").encode()) + 16 for m in payload["messages"])
    else:
        value: Any = payload.get(_REQUIRED_INPUT[endpoint])
        prompt = len(value.encode()) if isinstance(value, str) else sum(len(str(item).encode()) for item in value)
    return prompt + 1, _output_bound(payload, endpoint)
