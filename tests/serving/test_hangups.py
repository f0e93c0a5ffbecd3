"""A client that hangs up is ordinary: the model server logs no traceback for it, and its
answers say which kind of model it is in good English."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from modelserver.processes import RunningServer, free_port, stop, wait_until_healthy
from tests.serving.conftest import CHAT_MODEL

pytestmark = pytest.mark.slow


def test_a_client_that_hangs_up_leaves_no_traceback(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        command = [
            sys.executable,
            "-m",
            "modelserver",
            "--model",
            CHAT_MODEL,
            "--port",
            str(port),
            "--cache-dir",
            str(settings.MODEL_CACHE_DIR),
        ]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(RunningServer(url=url, port=port, process=process))
            body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 400}
            for _ in range(3):  # a few hundred tokens take seconds on this CPU: each client gives up first
                with pytest.raises(httpx.TimeoutException):
                    httpx.post(url + "/v1/chat/completions", json=body, timeout=0.5)
            time.sleep(0.5)  # let the server notice each hang-up
            assert httpx.post(url + "/v1/chat/completions", json={**body, "max_tokens": 2}, timeout=60).status_code == 200
        finally:
            stop(process)
    output = log_path.read_text()
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output[-3000:]


def test_a_wrong_endpoint_names_the_kind_of_model(tiny_chat_server: str, tiny_embedding_server: str) -> None:
    chat = httpx.post(tiny_chat_server + "/v1/embeddings", json={"model": "tiny-chat", "input": "hi"}).json()["error"]
    embedding = httpx.post(
        tiny_embedding_server + "/v1/chat/completions", json={"model": "tiny-embedding", "messages": [{"role": "user", "content": "hi"}]}
    ).json()["error"]
    assert "a chat model" in chat["message"] and chat["param"] == "model"
    assert "an embedding model" in embedding["message"]
