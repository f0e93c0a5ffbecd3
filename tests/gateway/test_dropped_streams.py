"""Every streamed token is charged, however the stream ends: property tests over the real
Gateway in-process (scripted upstream, no server). For a stream of any length, dropped by
the client after any number of events or cut by the upstream at any point:

- the usage event's completion tokens are the content events the client was sent (a
  role-only event is not a token), and its prompt tokens the upstream's figure if it came,
  else the prompt's estimate once the upstream began answering (0 if it never did);
- its cost is those tokens at the target's prices, exactly;
- the rate limiter is settled with the same tokens (they count against tokens-per-minute),
  and the spend ledger with the same charge."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.gateway.limits import Admission, MemoryLimiter
from routing.gateway.parsing import prompt_estimate
from routing.gateway.pool import UpstreamError
from routing.gateway.spend import Cap, MemorySpendLedger, SpendPolicy, to_micros
from tests.gateway.test_in_process import CHAT, Harness, ScriptedPool, ScriptedResponse, _route, _target

PRICE = Decimal("2.5")  # per million tokens, in and out
ROLE = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
WORD = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "word"}}]}
PROMPT = "Tell me a long story about the sea, please."


class PausingResponse(ScriptedResponse):
    """Yields to the event loop between chunks, as a network upstream does, so a client's
    disconnect can land between any two events."""

    async def chunks(self):  # type: ignore[no-untyped-def, override]
        for index, chunk in enumerate(self._chunks):
            if self._break_after is not None and index >= self._break_after:
                raise UpstreamError("connection reset by peer", before_response=False)
            await asyncio.sleep(0)
            yield chunk


class RecordingLimiter(MemoryLimiter):
    def __init__(self) -> None:
        super().__init__()
        self.settled: list[int] = []

    async def settle(self, request_id: str, admission: Admission, used_tokens: int) -> None:
        self.settled.append(used_tokens)
        await super().settle(request_id, admission, used_tokens)


class RecordingLedger(MemorySpendLedger):
    def __init__(self) -> None:
        super().__init__()
        self.settled: list[int] = []

    async def settle(self, scopes: list[str], lease: str, actual: int) -> None:
        self.settled.append(actual)
        await super().settle(scopes, lease, actual)


def _stream(words: int, usage: bool) -> list[bytes]:
    events: list[dict[str, Any]] = [ROLE, *([WORD] * words)]
    if usage:
        events.append({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": words}})
    return [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


def _drive(harness: Harness, body: dict[str, Any], *, drop_after: int | None) -> bytes:
    """Posts `body` straight through ASGI; the client goes away once it has received
    `drop_after` content events (never, for None). Returns what it received."""
    received: list[bytes] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not receive.started:  # type: ignore[attr-defined]
            receive.started = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    receive.started = False  # type: ignore[attr-defined]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            received.append(message.get("body", b""))
            if drop_after is not None and b"".join(received).count(b'"content":"word"') >= drop_after:
                gone.set()
        await asyncio.sleep(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", b"Bearer sbk_acme"), (b"content-type", b"application/json")],
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": ("gateway.test", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
        "raw_path": b"/v1/chat/completions",
    }
    asyncio.run(harness.gateway(scope, receive, send))
    return b"".join(received)


def _harness(response: ScriptedResponse) -> tuple[Harness, RecordingLimiter, RecordingLedger]:
    cap = Cap(scope="org_acme", limit_micros=10**12, spent_micros=0, refusal="monthly budget reached")
    policy = SpendPolicy(organization=cap, keys={})
    harness = Harness(
        ScriptedPool({"http://a.test": [response]}), _route("chat", _target("only", "http://a.test", price=str(PRICE))), spend=policy
    )
    limiter, ledger = RecordingLimiter(), RecordingLedger()
    harness.gateway.limiter, harness.gateway.spend = limiter, ledger
    return harness, limiter, ledger


BODY = {**CHAT, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
ESTIMATE = prompt_estimate(BODY, "chat/completions")


def _check_charged(harness: Harness, limiter: RecordingLimiter, ledger: RecordingLedger, prompt: int, completion: int) -> None:
    [event] = harness.events
    assert (event.input_tokens, event.output_tokens) == (prompt, completion)
    assert event.cost == (prompt + completion) * PRICE / 1_000_000
    assert limiter.settled == [prompt + completion]
    assert ledger.settled == [to_micros(event.cost)]


@settings(max_examples=60, deadline=None)
@given(words=st.integers(min_value=0, max_value=12), drop=st.integers(min_value=0, max_value=13), usage=st.booleans())
def test_a_stream_the_client_drops_at_any_point_is_charged_for_what_was_sent(words: int, drop: int, usage: bool) -> None:
    harness, limiter, ledger = _harness(PausingResponse(200, _stream(words, usage)))
    dropped = drop <= words
    received = _drive(harness, BODY, drop_after=drop if dropped else None)
    sent = received.count(b'"content":"word"')
    [event] = harness.events
    if dropped:
        # Gone before the usage event: charged for the words it was sent (at least those it
        # waited for) and the prompt's estimate, as the upstream had begun to answer.
        assert event.status == 499 and drop <= sent <= words and b"[DONE]" not in received
        _check_charged(harness, limiter, ledger, ESTIMATE, sent)
    else:
        assert event.status == 200 and sent == words and b"[DONE]" in received
        _check_charged(harness, limiter, ledger, 11 if usage else ESTIMATE, words)  # the role-only event is no token


@settings(max_examples=40, deadline=None)
@given(words=st.integers(min_value=0, max_value=10), cut=st.integers(min_value=0, max_value=14))
def test_a_stream_the_upstream_cuts_at_any_point_is_metered_exactly(words: int, cut: int) -> None:
    chunks = _stream(words, usage=True)  # the role event, the words, the usage event, [DONE]
    harness, limiter, ledger = _harness(PausingResponse(200, chunks, break_after=cut))
    received = _drive(harness, BODY, drop_after=None)
    [event] = harness.events
    sent_words = min(max(cut - 1, 0), words)
    assert received.count(b'"content":"word"') == sent_words
    if cut >= len(chunks):
        assert event.status == 200
    else:
        assert (event.status, event.error_code) == (502, "upstream_stream_interrupted")
    if cut > words + 1:  # the usage event came: the upstream's own figures
        _check_charged(harness, limiter, ledger, 11, words)
    else:
        _check_charged(harness, limiter, ledger, ESTIMATE if cut else 0, sent_words)
