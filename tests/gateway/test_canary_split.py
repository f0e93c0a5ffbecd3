"""A deployment's canary split in the gateway, in-process (tests/gateway/test_in_process.py's
Harness): the share of requests each revision gets, retries kept within the revision the
split drew while it has a replica to try, the failover rule when it has none, and what
the gateway counts for the canary's verdict."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import httpx
import pytest

from deployments.canaries import TallyDelta
from routing.gateway.canary_tally import CanaryTally
from routing.gateway.pool import UpstreamError, UpstreamResponse
from routing.gateway.snapshot import CanarySplit, Target
from tests.gateway.test_in_process import CHAT, Harness, ScriptedPool, ScriptedResponse, _ok, _replicas, _route

STABLE, CANARY = "rev_1", "rev_2"


def _split(target: Target, percent: int) -> Target:
    return dataclasses.replace(
        target, canary=CanarySplit(canary_id="can_1", canary_revision_id=CANARY, stable_revision_id=STABLE, percent=percent)
    )


class AnsweringPool(ScriptedPool):
    """Answers from an origin's script while it lasts, then 200."""

    async def send(self, url: str, body: bytes, headers: list[tuple[bytes, bytes]], *, tenant_supplied: bool = False) -> UpstreamResponse:
        origin = url.split("/v1/")[0]
        if not self.scripts.get(origin):
            self.scripts[origin] = [_ok()]
        return await super().send(url, body, headers, tenant_supplied=tenant_supplied)


class Counted:
    def __init__(self) -> None:
        self.deltas: list[TallyDelta] = []

    async def __call__(self, deltas: list[TallyDelta]) -> None:
        self.deltas += deltas

    def total(self, revision_id: str) -> tuple[int, int, int]:
        """(requests, errors, timed answers) counted for the revision."""
        mine = [delta for delta in self.deltas if delta.revision_id == revision_id and delta.canary_id == "can_1"]
        return sum(d.requests for d in mine), sum(d.errors for d in mine), sum(d.latency_samples for d in mine)


def _harness(pool: ScriptedPool, target: Target, *, seed: int = 7, **route: Any) -> tuple[Harness, Counted]:
    harness = Harness(pool, dataclasses.replace(_route("chat", target), **route))
    counted = Counted()
    harness.gateway.upstream.rng = random.Random(seed)
    harness.gateway.upstream.tally = CanaryTally(report=counted, every_s=0.01)
    return harness, counted


def _post(harness: Harness, count: int, body: dict[str, Any] = CHAT) -> list[httpx.Response]:
    """`count` requests, then whatever the tally still holds reported (one event loop)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=harness.gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            responses = [
                await client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sbk_acme"}) for _ in range(count)
            ]
        tally = harness.gateway.upstream.tally
        assert tally is not None
        await tally.aclose()
        return responses

    return asyncio.run(run())


def _origin(url: str) -> str:
    return url.split("/v1/")[0]


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_each_revision_gets_its_share_and_every_answer_names_the_revision_that_served_it(percent: int) -> None:
    target = _split(
        _replicas(
            "chat",
            ("http://stable-a.test", STABLE, "old-model"),
            ("http://stable-b.test", STABLE, "old-model"),
            ("http://canary.test", CANARY, "new-model"),
        ),
        percent,
    )
    pool = AnsweringPool({})
    harness, counted = _harness(pool, target)
    responses = _post(harness, 1000)
    assert all(response.status_code == 200 for response in responses)
    revisions = [response.headers["x-switchboard-revision"] for response in responses]
    share = revisions.count(CANARY) / len(revisions)
    assert abs(share - percent / 100) < 0.04, share  # 1,000 draws: 4 points is over 4 standard deviations at 50%
    # Each answer came from a replica of the revision it names, sent that revision's model.
    models = {STABLE: "old-model", CANARY: "new-model"}
    for response, (url, sent) in zip(responses, pool.sent, strict=True):
        revision = response.headers["x-switchboard-revision"]
        assert (_origin(url) == "http://canary.test") == (revision == CANARY)
        assert sent["model"] == models[revision] == response.headers["x-switchboard-upstream-model"]
    assert {_origin(url) for url, _ in pool.sent} == {"http://stable-a.test", "http://stable-b.test", "http://canary.test"}
    # What the verdict reads: every attempt counted under its revision, each a timed whole answer.
    assert counted.total(CANARY) == (revisions.count(CANARY), 0, revisions.count(CANARY))
    assert counted.total(STABLE) == (revisions.count(STABLE), 0, revisions.count(STABLE))


def test_a_failed_attempt_is_retried_within_the_revision_the_split_drew() -> None:
    target = _split(
        _replicas(
            "chat",
            ("http://stable.test", STABLE, "old-model"),
            ("http://canary-a.test", CANARY, "new-model"),
            ("http://canary-b.test", CANARY, "new-model"),
        ),
        99,
    )
    # One canary replica fails: the other canary replica answers, never the stable one.
    pool = AnsweringPool({"http://canary-a.test": [ScriptedResponse(503, [b"{}"])] * 3})
    harness, _ = _harness(pool, target, seed=1)
    responses = _post(harness, 3)
    assert {(r.status_code, r.headers["x-switchboard-revision"]) for r in responses} == {(200, CANARY)}
    assert "http://stable.test" not in {_origin(url) for url, _ in pool.sent}
    # Both fail: only then the stable revision, which answers and says so.
    pool = AnsweringPool({origin: [ScriptedResponse(503, [b"{}"])] for origin in ("http://canary-a.test", "http://canary-b.test")})
    harness, _ = _harness(pool, target, seed=1)
    [response] = _post(harness, 1)
    assert (response.status_code, response.headers["x-switchboard-revision"], response.headers["x-switchboard-attempts"]) == (
        200,
        STABLE,
        "3",
    )
    assert [_origin(url) for url, _ in pool.sent][2] == "http://stable.test"


def test_when_the_drawn_revision_has_no_replica_left_the_request_fails_over_to_the_other_and_says_so() -> None:
    # The rule: an answer comes from the revision the split drew while that revision has a
    # replica to try; when every one of them failed (or has its breaker open, or none is
    # READY yet), the request is retried on the other revision rather than failed, and
    # the answer's x-switchboard-revision names the revision that actually served it.
    target = _split(_replicas("chat", ("http://stable.test", STABLE, "old-model"), ("http://canary.test", CANARY, "new-model")), 99)
    errors: list[ScriptedResponse | Exception] = [ScriptedResponse(500, [b"{}"]), UpstreamError("connection refused", before_response=True)]
    pool = AnsweringPool({"http://canary.test": errors})
    harness, counted = _harness(pool, target, seed=3)
    responses = _post(harness, 4)
    assert [response.status_code for response in responses] == [200] * 4
    assert [response.headers["x-switchboard-revision"] for response in responses] == [STABLE, STABLE, CANARY, CANARY]
    assert [response.headers["x-switchboard-upstream-model"] for response in responses] == [
        "old-model",
        "old-model",
        "new-model",
        "new-model",
    ]
    assert [response.headers["x-switchboard-attempts"] for response in responses] == ["2", "2", "1", "1"]
    assert [_origin(url) for url, _ in pool.sent[:4]] == ["http://canary.test", "http://stable.test"] * 2
    assert counted.total(CANARY) == (4, 2, 2)  # the 500 and the refused connection count against the canary
    assert counted.total(STABLE) == (2, 0, 2)


def test_a_canary_with_no_ready_replica_yet_sends_everything_to_the_stable_revision() -> None:
    target = _split(_replicas("chat", ("http://stable.test", STABLE, "old-model")), 99)
    harness, counted = _harness(AnsweringPool({}), target)
    responses = _post(harness, 20)
    assert {(r.status_code, r.headers["x-switchboard-revision"], r.headers["x-switchboard-attempts"]) for r in responses} == {
        (200, STABLE, "1")
    }
    assert counted.total(CANARY) == (0, 0, 0) and counted.total(STABLE) == (20, 0, 20)


def test_a_busy_replica_is_not_counted_against_its_revision_and_a_stream_is_not_timed() -> None:
    target = _split(_replicas("chat", ("http://stable.test", STABLE, "old-model"), ("http://canary.test", CANARY, "new-model")), 99)
    pool = AnsweringPool({"http://canary.test": [ScriptedResponse(429, [b"{}"])]})
    harness, counted = _harness(pool, target, seed=3)
    [busy] = _post(harness, 1)
    assert busy.status_code == 200 and busy.headers["x-switchboard-revision"] == STABLE
    assert counted.total(CANARY) == (0, 0, 0)
    sse = [b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]
    pool.scripts["http://canary.test"] = [ScriptedResponse(200, sse)]
    [streamed] = _post(harness, 1, {**CHAT, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["x-switchboard-revision"] == CANARY
    assert counted.total(CANARY) == (1, 0, 0)


def test_a_deployment_without_a_canary_is_neither_split_nor_counted() -> None:
    target = _replicas("chat", ("http://a.test", STABLE, "m"), ("http://b.test", CANARY, "m"))
    harness, counted = _harness(AnsweringPool({}), target)
    responses = _post(harness, 10)
    assert all(response.status_code == 200 for response in responses) and counted.deltas == []
