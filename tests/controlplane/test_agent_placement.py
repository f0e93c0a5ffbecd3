"""The local agent places what a replica request names: GPUs pinned with
CUDA_VISIBLE_DEVICES when it has them, a CPU replica seeing none, a GPU replica on an agent
without GPUs labelled simulated, other runtimes refused; each replica reports its node
and device. In-process over ASGI, with the model-server start replaced by a plain child
process (the real start is covered by tests/controlplane/test_integration.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deployments import agent as agent_module
from deployments.agent import build_agent_app
from modelserver.auth import API_KEY_VARIABLE

TOKEN = "t" * 48
OWN = {"authorization": f"Bearer {TOKEN}"}


@dataclass
class Started:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    """Each start's environment; the "server" is a sleeping child, stopped afterwards."""
    environments: list[dict[str, str]] = []
    children: list[subprocess.Popen[bytes]] = []

    def start(model: str, *args: str, env: dict[str, str], **kwargs: object) -> Started:
        environments.append(env)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        children.append(child)
        return Started(f"http://127.0.0.1:{9000 + len(children)}", child)

    monkeypatch.setattr(agent_module, "start_model_server", start)
    yield environments
    for child in children:
        child.kill()
        child.wait()


def _call(app: object, method: str, path: str, json: object = None) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as client:  # type: ignore[arg-type]
            return await client.request(method, path, headers=OWN, json=json)

    return asyncio.run(call())


def _create(app: object, replica_id: str, **fields: object) -> httpx.Response:
    return _call(app, "POST", "/replicas", {"replica_id": replica_id, "model": "tiny-chat", "token": "k" * 40, **fields})


def test_gpus_are_pinned_one_replica_each_and_a_cpu_replica_sees_none(tmp_path: Path, started: list[dict[str, str]]) -> None:
    app = build_agent_app("gpu-box", token=TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "a.json", gpus=["0", "1"], node="node-7")
    first = _create(app, "rep_1", gpu_type="H100", gpu_count=1)
    second = _create(app, "rep_2", gpu_type="H100", gpu_count=1)
    cpu = _create(app, "rep_3", gpu_type="CPU", gpu_count=0)
    assert (first.status_code, second.status_code, cpu.status_code) == (201, 201, 201)
    assert [r.json()["device"] for r in (first, second, cpu)] == ["cuda:0", "cuda:1", "cpu"]
    assert {r.json()["node"] for r in (first, second, cpu)} == {"node-7"}
    assert [env["CUDA_VISIBLE_DEVICES"] for env in started] == ["0", "1", ""]
    assert all(env[API_KEY_VARIABLE] == "k" * 40 for env in started)

    # No GPU left: refused with the reason, and nothing started.
    full = _create(app, "rep_4", gpu_type="H100", gpu_count=1)
    assert full.status_code == 409 and "0 of this node's 2 free" in full.json()["error"]
    assert len(started) == 3
    # Creating the same replica again is the same replica, on the same GPU.
    assert _create(app, "rep_1", gpu_type="H100", gpu_count=1).json()["device"] == "cuda:0"
    listed = {row["replica_id"]: row["device"] for row in _call(app, "GET", "/replicas").json()["replicas"]}
    assert listed == {"rep_1": "cuda:0", "rep_2": "cuda:1", "rep_3": "cpu"}
    # A restarted agent adopts nothing here (the children are not model servers), so the
    # state file records the pinning for one that would.
    assert '"devices": ["0"]' in (tmp_path / "a.json").read_text()


def test_an_agent_without_gpus_runs_gpu_replicas_on_the_cpu_labelled_simulated(tmp_path: Path, started: list[dict[str, str]]) -> None:
    app = build_agent_app("sim", token=TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "a.json", gpus=[])
    created = _create(app, "rep_1", gpu_type="T4", gpu_count=1, env={"HF_HUB_OFFLINE": "1"})
    assert created.status_code == 201 and created.json()["device"] == "cpu (simulated T4)" and created.json()["node"]
    assert started[0]["CUDA_VISIBLE_DEVICES"] == "" and started[0]["HF_HUB_OFFLINE"] == "1"


def test_other_runtimes_and_reserved_environment_are_refused(tmp_path: Path, started: list[dict[str, str]]) -> None:
    app = build_agent_app("sim", token=TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "a.json", gpus=[])
    vllm = _create(app, "rep_1", runtime="vllm", gpu_type="T4", gpu_count=1)
    assert vllm.status_code == 409 and "built-in model server only" in vllm.json()["error"]
    for env in ({API_KEY_VARIABLE: "mine"}, {"CUDA_VISIBLE_DEVICES": "0"}):
        refused = _create(app, "rep_2", env=env)
        assert refused.status_code == 400 and "set by the agent" in refused.json()["error"]
    for bad in ({"gpu_count": -1}, {"gpu_count": "1"}, {"gpu_type": ""}, {"env": {"A": 1}}):
        assert _create(app, "rep_3", **bad).status_code == 400
    assert started == []


def test_deleting_a_replica_that_already_exited_forgets_it(tmp_path: Path, started: list[dict[str, str]]) -> None:
    app = build_agent_app("sim", token=TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "a.json", gpus=["0"])
    created = _create(app, "rep_1", gpu_type="T4", gpu_count=1)
    assert created.status_code == 201
    pid = created.json()["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    (row,) = _call(app, "GET", "/replicas").json()["replicas"]
    assert row["running"] is False
    assert _call(app, "DELETE", "/replicas/rep_1").json() == {"deleted": True}
    assert _call(app, "GET", "/replicas").json()["replicas"] == []
    # Its GPU is free again.
    assert _create(app, "rep_2", gpu_type="T4", gpu_count=1).json()["device"] == "cuda:0"
