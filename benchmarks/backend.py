"""A trivial OpenAI-compatible backend: the benchmark's upstream and the tests' controlled one.

It answers chat, completions (both streamed or not), embeddings and models instantly with
fixed text and exact usage figures, so what is measured in front of it is the proxy. Its
behaviour can be changed while it runs (POST /control): added latency, a fixed error
status, or streams that break after some chunks; tests use that to drive failover and
circuit breakers. Every response names the backend (`x-backend-name`), so a test can tell
who served a request.

    python -m benchmarks.backend --port 9200 --name east-1
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

COMPLETION_TEXT = "Hello from the benchmark backend."
COMPLETION_TOKENS = 7
STREAM_CHUNKS = 5
EMBEDDING_DIMENSIONS = 8


@dataclass
class Behaviour:
    latency_ms: float = 0.0
    fail_status: int = 0  # answer every inference request with this status (0: succeed)
    break_stream_after: int = 0  # drop the connection after this many chunks (0: never)
    chunk_delay_ms: float = 0.0


class Backend:
    def __init__(self, name: str, behaviour: Behaviour) -> None:
        self.name = name
        self.behaviour = behaviour
        self.requests = 0
        self.disconnects = 0  # streams whose client hung up before the end
        self._name_header = (b"x-backend-name", name.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path = scope["path"]
        body = await _read_body(receive)
        if path == "/control" and scope["method"] == "POST":
            await self._control(body, send)
            return
        if path == "/stats":
            await self._json(send, 200, {"name": self.name, "requests": self.requests, "disconnects": self.disconnects})
            return
        if path in ("/health", "/v1/models"):
            await self._json(
                send, 200, {"object": "list", "data": [{"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]}
            )
            return
        if path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings") or scope["method"] != "POST":
            await self._json(
                send, 404, {"error": {"message": f"No route {path}", "type": "invalid_request_error", "param": None, "code": None}}
            )
            return
        await self._inference(path, body, receive, send)

    async def _inference(self, path: str, body: bytes, receive: Receive, send: Send) -> None:
        self.requests += 1
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            await self._json(
                send, 400, {"error": {"message": "invalid JSON", "type": "invalid_request_error", "param": None, "code": None}}
            )
            return
        behaviour = self.behaviour
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        if behaviour.fail_status:
            await self._json(
                send,
                behaviour.fail_status,
                {"error": {"message": f"{self.name} is failing on purpose", "type": "server_error", "param": None, "code": None}},
            )
            return
        model = str(request.get("model", "bench-model"))
        prompt_tokens = _prompt_tokens(request)
        if path == "/v1/embeddings":
            inputs = request.get("input")
            count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
            data = [{"object": "embedding", "index": i, "embedding": [0.125] * EMBEDDING_DIMENSIONS} for i in range(count)]
            await self._json(
                send,
                200,
                {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}},
            )
            return
        chat = path == "/v1/chat/completions"
        if request.get("stream"):
            options = request.get("stream_options") or {}
            stream = asyncio.ensure_future(self._stream(send, model, chat, prompt_tokens, bool(options.get("include_usage"))))
            hung_up = asyncio.ensure_future(_disconnected(receive))
            done, _ = await asyncio.wait((stream, hung_up), return_when=asyncio.FIRST_COMPLETED)
            if stream in done:
                hung_up.cancel()
                stream.result()
            else:
                stream.cancel()
                self.disconnects += 1
            return
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": COMPLETION_TOKENS, "total_tokens": prompt_tokens + COMPLETION_TOKENS}
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": COMPLETION_TEXT}, "finish_reason": "stop"}
            await self._json(
                send,
                200,
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
        else:
            choice = {"index": 0, "text": COMPLETION_TEXT, "finish_reason": "stop", "logprobs": None}
            await self._json(
                send,
                200,
                {
                    "id": "cmpl-bench",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )

    async def _stream(self, send: Send, model: str, chat: bool, prompt_tokens: int, include_usage: bool) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), self._name_header]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        created = int(time.time())
        words = COMPLETION_TEXT.split(" ")
        for index in range(STREAM_CHUNKS):
            if self.behaviour.break_stream_after and index >= self.behaviour.break_stream_after:
                # Cut the connection without finishing the chunked body, as a crashed server would.
                raise ConnectionAbortedError(f"{self.name} broke the stream on purpose")
            text = (" " if index else "") + words[index % len(words)]
            last = index == STREAM_CHUNKS - 1
            if chat:
                chunk: dict[str, Any] = {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop" if last else None}],
                }
            else:
                chunk = {
                    "id": "cmpl-bench",
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop" if last else None}],
                }
            if include_usage:
                chunk["usage"] = None
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
            if self.behaviour.chunk_delay_ms:
                await asyncio.sleep(self.behaviour.chunk_delay_ms / 1000)
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": STREAM_CHUNKS, "total_tokens": prompt_tokens + STREAM_CHUNKS}
            final: dict[str, Any] = {
                "id": "chatcmpl-bench" if chat else "cmpl-bench",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(final) + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _control(self, body: bytes, send: Send) -> None:
        changes = orjson.loads(body or b"{}")
        if changes.pop("reset", False):
            self.behaviour = Behaviour()
            self.requests = self.disconnects = 0
        for field, value in changes.items():
            if hasattr(self.behaviour, field):
                setattr(self.behaviour, field, type(getattr(self.behaviour, field))(value))
        await self._json(send, 200, {"name": self.name, **vars(self.behaviour)})

    async def _json(self, send: Send, status: int, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), self._name_header]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _prompt_tokens(request: dict[str, Any]) -> int:
    """A deterministic stand-in for tokenizing: one token per four characters, at least one."""
    if "messages" in request:
        chars = sum(len(str(message.get("content", ""))) for message in request["messages"] if isinstance(message, dict))
    else:
        value = request.get("prompt", request.get("input", ""))
        chars = len(value) if isinstance(value, str) else sum(len(str(item)) for item in value) if isinstance(value, list) else 0
    return max(1, chars // 4)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    behaviour = Behaviour(latency_ms=args.latency_ms, fail_status=args.fail_status, chunk_delay_ms=args.chunk_delay_ms)
    uvicorn.run(
        Backend(args.name, behaviour),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
