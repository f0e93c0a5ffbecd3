"""`manage.py bench gpu`: the CUDA path, as one short command on a machine with an NVIDIA
GPU (these development machines have none; it refuses to run without CUDA).

1. The built-in model server on CUDA (fp16: `modelserver.loading.pick_device`) with
   SmolLM2-135M-Instruct, checked through its /health to really be on `cuda`.
2. vLLM's OpenAI server with the same model (exported from the packaged GGUF weights into
   a Hugging Face directory, so nothing is fetched from a hub), started through the Ray
   driver on a local Ray cluster with one GPU, when vLLM and Ray are installed.

Each is driven with the official `openai` SDK: 1 stream, then 16 concurrent streams, of
64-token completions; tokens per second are the completion tokens the servers reported
in their usage chunks over the wall time. Printed side by side."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from django.conf import settings
from openai import AsyncOpenAI

from benchmarks.serving import CHAT_MODEL, CHAT_TOKENS, chat_prompts
from deployments.drivers.base import RUNTIME_VLLM, ReplicaRequest
from deployments.drivers.ray import RayConnection, RayServeDriver
from deployments.local_ray import RayNode, local_ray_cluster
from modelserver.loading import smollm2_directory
from modelserver.processes import model_server

STREAMS = (1, 16)
REQUESTS_PER_STREAM = 4


@dataclass
class Run:
    runtime: str
    device: str
    tokens_per_s: dict[int, float] = field(default_factory=dict)  # streams -> tokens/s
    skipped: str = ""  # why this runtime did not run, if it did not


@dataclass
class GpuFigures:
    gpu: str
    runs: list[Run]

    def as_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            **{
                f"{run.runtime}_{streams}_streams_tokens_per_s": round(rate, 1)
                for run in self.runs
                for streams, rate in run.tokens_per_s.items()
            },
            **{f"{run.runtime}_skipped": run.skipped for run in self.runs if run.skipped},
        }


async def _stream_tokens(client: AsyncOpenAI, model: str, prompt: str) -> int:
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=CHAT_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens


async def _rate(base_url: str, api_key: str, model: str, streams: int, per_stream: int) -> float:
    """Completion tokens per second with `streams` clients each sending requests in turn."""
    prompts = chat_prompts(streams * per_stream)
    async with AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120) as client:
        await _stream_tokens(client, model, prompts[0])  # warm-up

        async def one_stream(index: int) -> int:
            asked = prompts[index * per_stream : (index + 1) * per_stream]
            return sum([await _stream_tokens(client, model, prompt) for prompt in asked])

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one_stream(index) for index in range(streams))))
        return tokens / (time.perf_counter() - started)


def measure(base_url: str, api_key: str, model: str = CHAT_MODEL, per_stream: int = REQUESTS_PER_STREAM) -> dict[int, float]:
    return {streams: asyncio.run(_rate(base_url, api_key, model, streams, per_stream)) for streams in STREAMS}


def builtin_on_cuda(log: Any) -> Run:
    with model_server(CHAT_MODEL, "--max-batch-size", str(max(STREAMS)), cache_dir=settings.MODEL_CACHE_DIR) as server:
        device = str(httpx.get(server.url + "/health", timeout=5).json().get("device"))
        if not device.startswith("cuda"):
            raise RuntimeError(f"the built-in server loaded on {device}, not CUDA")
        log(f"built-in server on {device}: {', '.join(str(s) for s in STREAMS)} streams ...")
        return Run("builtin", device, measure(server.url + "/v1", "unused"))


def _ready_endpoint(driver: RayServeDriver, replica_id: str, token: str, timeout: float) -> str:
    """The replica's endpoint once its server answers /health with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = next((row for row in driver.list_replicas() if row.replica_id == replica_id), None)
        if seen is not None and not seen.running:
            raise RuntimeError(f"the vLLM replica failed: {seen.detail}")
        if seen is not None and seen.endpoint:
            try:
                if httpx.get(seen.endpoint + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200:
                    return seen.endpoint
            except httpx.HTTPError:
                pass
        time.sleep(2)
    raise RuntimeError(f"the vLLM replica was not ready within {timeout:.0f} s")


def vllm_through_ray(gpu_type: str, log: Any) -> Run:
    """vLLM's OpenAI server with SmolLM2, placed by the Ray driver on a local Ray cluster
    whose one node advertises this machine's GPU."""
    if shutil.which("vllm") is None:
        return Run("vllm", "", skipped="vLLM is not installed here (pip install vllm)")
    weights = smollm2_directory(cache_dir=settings.MODEL_CACHE_DIR)
    project_root = Path(__file__).resolve().parent.parent
    with local_ray_cluster(project_root, RayNode(cpus=4, gpus=1, resources={f"gpu_type:{gpu_type}": 1})) as cluster:
        driver = RayServeDriver(RayConnection.parse({"address": cluster.address, "namespace": "gpu-check"}))
        token, replica_id = secrets.token_urlsafe(32), "gpu-check-vllm"
        request = ReplicaRequest(
            replica_id=replica_id,
            model=CHAT_MODEL,
            token=token,
            gpu_type=gpu_type,
            gpu_count=1,
            runtime=RUNTIME_VLLM,
            artifact=str(weights),
        )
        driver.create_replica(request)
        try:
            endpoint = _ready_endpoint(driver, replica_id, token, timeout=900)
            log(f"vLLM through the Ray driver at {endpoint}: {', '.join(str(s) for s in STREAMS)} streams ...")
            return Run("vllm", f"{gpu_type} via Ray", measure(endpoint + "/v1", token))
        finally:
            driver.delete_replica(replica_id, drain_seconds=0)


def run(*, seconds: float = 10.0, log: Any = print) -> GpuFigures:
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device here: run `python3 manage.py bench gpu` on a machine with an NVIDIA GPU")
    gpu = torch.cuda.get_device_name(0)
    log(f"GPU: {gpu}")
    gpu_type = gpu.split()[-1]  # "NVIDIA H200" -> H200: the resource the Ray node advertises
    return GpuFigures(gpu, [builtin_on_cuda(log), vllm_through_ray(gpu_type, log)])


def table(figures: GpuFigures) -> str:
    lines = [f"GPU: {figures.gpu}", "", "| runtime | device | " + " | ".join(f"{s} stream(s), tokens/s" for s in STREAMS) + " |"]
    lines.append("|---|---|" + "---|" * len(STREAMS))
    for run in figures.runs:
        cells = [f"{run.tokens_per_s[s]:.1f}" if s in run.tokens_per_s else "-" for s in STREAMS]
        lines.append(f"| {run.runtime} | {run.device or run.skipped} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
