"""/health must not lie: a broken engine turns it 503, and requests get a clear 503."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from starlette.testclient import TestClient

from modelserver.app import ServerOptions, build_app
from modelserver.catalog import get_spec


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.05)


@pytest.mark.parametrize("model", ["tiny-chat", "tiny-embedding"])
def test_a_failing_forward_pass_marks_the_server_broken(model: str) -> None:
    app, server = build_app(get_spec(model), ServerOptions(cache_dir=settings.MODEL_CACHE_DIR, max_batch_size=4, max_queue=8))
    with TestClient(app) as client:
        _wait_ready(client)

        def device_lost(*args: object, **kwargs: object) -> None:  # what a dead GPU looks like to the engine
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        server.loaded.model.forward = device_lost  # type: ignore[union-attr, method-assign]
        if model == "tiny-chat":
            response = client.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            )
        else:
            response = client.post("/v1/embeddings", json={"model": model, "input": "hi"})
        assert response.status_code == 503
        assert "illegal memory access" in response.json()["error"]["message"]
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "broken" and "illegal memory access" in health.json()["reason"]
        after = client.post(
            "/v1/embeddings" if model == "tiny-embedding" else "/v1/chat/completions",
            json={"model": model, "input": "x", "messages": [{"role": "user", "content": "x"}]},
        )
        assert after.status_code == 503


def test_injected_faults_answer_500_to_inference_only() -> None:
    """--fault-rate (tests and drills): every inference request fails at 1.0, /health stays ready."""
    options = ServerOptions(cache_dir=settings.MODEL_CACHE_DIR, max_batch_size=4, max_queue=8, fault_rate=1.0)
    app, _ = build_app(get_spec("tiny-embedding"), options)
    with TestClient(app) as client:
        _wait_ready(client)
        for _ in range(5):
            response = client.post("/v1/embeddings", json={"model": "tiny-embedding", "input": "hi"})
            assert response.status_code == 500 and response.json()["error"]["code"] == "injected_fault"
        assert client.get("/health").status_code == 200


def test_the_fault_rate_comes_from_the_environment_and_must_be_a_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelserver import __main__ as command

    monkeypatch.setenv(command.FAULT_RATE_VARIABLE, "0.25")
    assert command.parser().parse_args(["--model", "tiny-chat"]).fault_rate == 0.25
    with pytest.raises(SystemExit):
        command.parser().parse_args(["--model", "tiny-chat", "--fault-rate", "1.5"])
