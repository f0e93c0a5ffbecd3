"""Streamed answers: Server-Sent Events relayed byte for byte, their usage read on the way.

When the gateway asked the upstream for usage on the client's behalf (so every streamed
token is counted), it removes what the client did not ask for. Events end with a blank
line (LF or CRLF); anything unparseable passes untouched.

Every token sent is charged. Until the upstream reports its usage (in the last event), the
exchange holds what was sent so far: one completion token per event that carries content
(text or a tool call; a role-only or empty event carries none) and the prompt's estimate
once the upstream has begun answering (its first event). So a stream the client drops, or the upstream
cuts, is metered, billed and counted against tokens-per-minute for what it used.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from routing.gateway.accounting import take_usage
from routing.gateway.exchange import Attempt, Exchange, Send, rate_headers, served_by
from routing.gateway.limits import Admission
from routing.gateway.pool import UpstreamError, UpstreamResponse

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


async def relay_stream(
    send: Send,
    exchange: Exchange,
    attempt: Attempt,
    response: UpstreamResponse,
    *,
    inject_usage: bool,
    idle_timeout: float,
    admission: Admission | None,
) -> None:
    """Relays an upstream's 200 stream. Once the headers are out, a broken or stalled
    upstream ends the stream with an error event, the only honest ending left."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + served_by(exchange, attempt) + rate_headers(admission)}
    )
    exchange.status = 200
    relay = SseRelay(exchange, inject_usage)
    chunks = response.chunks().__aiter__()
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            out = relay.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        await send({"type": "http.response.body", "body": relay.flush(), "more_body": False})
    except (UpstreamError, TimeoutError) as error:
        reason = "stopped sending" if isinstance(error, TimeoutError) else "broke the connection"
        exchange.status, exchange.error_code = 502, "upstream_stream_interrupted"
        message = (
            f"The upstream ({exchange.target} in {exchange.region}) {reason} mid-stream; the response is incomplete. Retry the request."
        )
        error_event = {"error": {"message": message, "type": "upstream_error", "param": None, "code": "upstream_stream_interrupted"}}
        event = b"data: " + orjson.dumps(error_event) + b"\n\n"
        await send({"type": "http.response.body", "body": relay.flush() + event, "more_body": False})


class SseRelay:
    """Passes SSE events through byte for byte, reading usage from them; when the gateway
    asked for usage on the client's behalf, removes what the client did not ask for."""

    def __init__(self, exchange: Exchange, inject_usage: bool) -> None:
        self.exchange = exchange
        self.inject_usage = inject_usage
        self.buffer = b""
        self.content_events = 0

    def feed(self, chunk: bytes) -> bytes:
        self.buffer += chunk
        out = []
        while True:
            cut = _event_end(self.buffer)
            if cut < 0:
                break
            event, self.buffer = self.buffer[:cut], self.buffer[cut:]
            event = self._inspect(event)
            if event:
                out.append(event)
        return b"".join(out)

    def flush(self) -> bytes:
        tail, self.buffer = self.buffer, b""
        return self._inspect(tail) if tail.strip() else tail

    def _inspect(self, event: bytes) -> bytes:
        exchange = self.exchange
        if exchange.ttft_ms is None:
            exchange.ttft_ms = (time.perf_counter() - exchange.started) * 1000
        data = _event_data(event)
        if data is None or not data.startswith(b"{"):
            return event
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        if chunk.get("usage") is not None and take_usage(exchange, chunk["usage"]) and self.inject_usage and not chunk.get("choices"):
            return b""
        if not exchange.usage_reported and "choices" in chunk:
            # The upstream has read the prompt once it answers at all.
            exchange.input_tokens = exchange.input_tokens or exchange.prompt_estimate
        if _carries_content(chunk):
            self.content_events += 1
            if not exchange.usage_reported:
                exchange.output_tokens = self.content_events
        if self.inject_usage:
            return _without_null_usage(event, data)
        return event


def _carries_content(chunk: dict[str, object]) -> bool:
    """A chat delta with text or a tool call, or a completion's text."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")):
            return True
        if choice.get("text"):
            return True
    return False


def _without_null_usage(event: bytes, data: bytes) -> bytes:
    """The event without the `"usage": null` the client did not ask for."""
    if b',"usage":null' in event:
        return event.replace(b',"usage":null', b"")
    if b'"usage": null' in data:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        chunk.pop("usage", None)
        ending = b"\r\n\r\n" if event.endswith(b"\r\n\r\n") else b"\n\n"
        return b"data: " + orjson.dumps(chunk) + ending
    return event


def _event_end(buffer: bytes) -> int:
    """Index just past the first complete event's blank line, or -1."""
    lf, crlf = buffer.find(b"\n\n"), buffer.find(b"\r\n\r\n")
    ends = [i + 2 for i in (lf,) if i >= 0] + [i + 4 for i in (crlf,) if i >= 0]
    return min(ends) if ends else -1


def _event_data(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined), or None if it has none."""
    lines = [line[5:].removeprefix(b" ") for line in event.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
