"""`manage.py bench gateway`: the gateway against a trivial backend and against LiteLLM's
proxy, side by side in one run.

It starts the trivial OpenAI-compatible backend (benchmarks.backend), the gateway
(this project's ASGI application under uvicorn, one worker, production settings, on its
own SQLite database with a route to the backend, with the usage ingester beside it) and LiteLLM's proxy (one worker, same
backend; installed by this benchmark into .var/bench/litellm-venv the first time). wrk,
from Debian's packages (installed when missing and possible), sends the same chat
request to each at 1 and at 64 connections.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from deployments.models import Quota
from modelserver.processes import free_port, stop
from routing import services
from tenancy import services as console_services
from tenancy.context import OrgContext
from tenancy.models import Membership, Organization, Role, User

# The newest LiteLLM whose proxy extra installs from the registries this project uses
# (1.78 and later ask for litellm-proxy / litellm-enterprise builds not published there).
LITELLM_REQUIREMENT = "litellm[proxy]==1.77.7"
CONNECTIONS = (1, 64)
REQUEST = {"model": "bench-chat", "messages": [{"role": "user", "content": "Say hello to the benchmark."}], "max_tokens": 16}

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format('WRK {"requests": %%d, "seconds": %%f, "errors": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration / 1e6, errors, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class GatewayFigures:
    direct_c1: Load
    gateway_c1: Load
    litellm_c1: Load
    direct_c64: Load
    gateway_c64: Load
    litellm_c64: Load
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "vs_direct": round(self.gateway_c64.requests_per_s / self.direct_c64.requests_per_s, 3),
            "vs_litellm": round(self.gateway_c64.requests_per_s / self.litellm_c64.requests_per_s, 2),
            "added_p50_ms_c1": round(self.gateway_c1.p50_ms - self.direct_c1.p50_ms, 3),
            "added_p99_ms_c1": round(self.gateway_c1.p99_ms - self.direct_c1.p99_ms, 3),
            "litellm_added_p50_ms_c1": round(self.litellm_c1.p50_ms - self.direct_c1.p50_ms, 3),
            **{name: asdict(value) for name, value in vars(self).items() if isinstance(value, Load)},
            "seconds": self.seconds,
        }


def table(figures: GatewayFigures) -> str:
    data = figures.as_json()
    lines = [
        "| load | direct | gateway | LiteLLM |",
        "|---|---|---|---|",
    ]
    for c in CONNECTIONS:
        direct, gateway, litellm = (getattr(figures, f"{name}_c{c}") for name in ("direct", "gateway", "litellm"))
        lines.append(
            f"| {c} connection(s): requests/s | {direct.requests_per_s:,.0f} | {gateway.requests_per_s:,.0f} "
            f"| {litellm.requests_per_s:,.0f} |"
        )
        lines.append(
            f"| {c} connection(s): p50 / p99 ms | {direct.p50_ms:.2f} / {direct.p99_ms:.2f} | {gateway.p50_ms:.2f} / {gateway.p99_ms:.2f} "
            f"| {litellm.p50_ms:.2f} / {litellm.p99_ms:.2f} |"
        )
    lines += [
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| throughput vs direct to the backend (64 connections) | {data['vs_direct']:.2f} | printed |",
        f"| throughput vs LiteLLM (64 connections) | {data['vs_litellm']:.1f}x | >= 15x |",
        f"| added latency at 1 connection, p50 (vs direct) | {data['added_p50_ms_c1']:.3f} ms | <= 1 ms |",
        f"| added latency at 1 connection, p99 (vs direct) | {data['added_p99_ms_c1']:.3f} ms | printed |",
        f"| LiteLLM's added latency at 1 connection, p50 | {data['litellm_added_p50_ms_c1']:.3f} ms | (context) |",
    ]
    return "\n".join(lines)


def run(seconds: float, log: Callable[[str], None]) -> GatewayFigures:
    wrk = _ensure_wrk(log)
    root = Path(settings.BASE_DIR)
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-", dir=_bench_dir()))
    try:
        with (
            _backend() as backend_url,
            _gateway(root, work, backend_url, log) as (gateway_url, key),
            _litellm(work, backend_url, log) as litellm_url,
        ):
            results: dict[str, Load] = {}
            for connections in CONNECTIONS:
                for name, url, auth in (
                    ("direct", backend_url, "none"),
                    ("gateway", gateway_url, key),
                    ("litellm", litellm_url, "sk-bench"),
                ):
                    log(f"{name}: {connections} connection(s), {seconds:.0f} s")
                    _wrk(wrk, work, url, auth, connections, min(2.0, seconds))  # warm-up
                    results[f"{name}_c{connections}"] = _wrk(wrk, work, url, auth, connections, seconds)
        bad = {name: load.errors for name, load in results.items() if load.errors}
        if bad:
            raise RuntimeError(f"requests failed during the benchmark: {bad}")
        return GatewayFigures(seconds=seconds, **results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench_dir() -> Path:
    path = Path(settings.DATA_DIR) / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ensure_wrk(log: Callable[[str], None]) -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("wrk is not installed; install Debian's wrk package (apt-get install wrk).")
    log("installing Debian's wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def _wrk(wrk: str, work: Path, url: str, key: str, connections: int, seconds: float) -> Load:
    script = work / "post.lua"
    script.write_text(_WRK_SCRIPT % {"body": json.dumps(REQUEST), "key": key})
    completed = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url + "/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next((line for line in completed.stdout.splitlines() if line.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {completed.stdout} {completed.stderr}")
    summary = json.loads(line[4:])
    return Load(
        requests_per_s=summary["requests"] / summary["seconds"],
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=summary["errors"],
    )


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before it answered")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def _backend() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "--port", str(port), "--name", "bench"], cwd=settings.BASE_DIR)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/health", process)
        yield url
    finally:
        stop(process)


def _gateway_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    secret = "bench-" + os.urandom(16).hex()
    env.update(
        SWITCHBOARD_NO_BOOTSTRAP="1",
        SWITCHBOARD_DATA_DIR=str(work / "data"),
        SWITCHBOARD_DEBUG="false",
        SWITCHBOARD_SECRET_KEY=secret,
        SWITCHBOARD_API_KEY_SECRET=secret + ":keys",
        SWITCHBOARD_PROVIDER_KEY_SECRETS=secret + ":providers",
        SWITCHBOARD_ALLOWED_HOSTS="127.0.0.1,localhost",
        SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS="127.0.0.1",  # the backend is on loopback
    )
    return env


@contextmanager
def _gateway(root: Path, work: Path, backend_url: str, log: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """The production configuration of the embedded default, one uvicorn worker."""
    env = _gateway_env(work)
    log("gateway: migrating a fresh database and creating the benchmark route")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True)
    setup = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django; django.setup(); from benchmarks.gateway import prepare; print(prepare({backend_url!r}))",
        ],
        cwd=root,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        check=True,
        capture_output=True,
        text=True,
    )
    key = setup.stdout.strip().splitlines()[-1]
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=root,
        env=env,
        stderr=subprocess.DEVNULL,  # the gateway's own access log: one line per request
    )
    # The ingester writes the usage events into the database, as it does beside every
    # gateway: its CPU is part of what a request costs here.
    ingester = subprocess.Popen([sys.executable, "manage.py", "ingest_usage"], cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/metrics", process)
        yield url, key
    finally:
        stop(process)
        stop(ingester)


def prepare(backend_url: str) -> str:
    """In the gateway's database: an organization with limits high enough not to bind, a
    route to the backend as an external provider, and a key. Prints the key."""
    org = Organization.objects.create(name="Benchmark", slug="benchmark")
    owner = User.objects.create_user("bench@switchboard.local", os.urandom(16).hex())
    Membership.objects.create(organization=org, user=owner, role=Role.OWNER)
    Quota.objects.create(organization=org, requests_per_minute=100_000_000, tokens_per_minute=2_000_000_000, concurrent_requests=100_000)
    ctx = OrgContext(organization=org, role=Role.OWNER, user=owner)
    provider = services.create_provider(
        ctx, name="bench", base_url=backend_url + "/v1", region="local", api_key="", input_price_per_mtok="0.5", output_price_per_mtok="1.5"
    )
    services.create_route(
        ctx, services.RouteSpec(name="bench-chat", targets=(services.TargetSpec(provider_id=provider.pk, provider_model="bench-model"),))
    )
    return console_services.create_api_key(ctx, name="benchmark", scopes=["inference"]).plaintext


def _litellm_python(log: Callable[[str], None]) -> Path:
    venv = _bench_dir() / "litellm-venv"
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    if not marker.exists() or marker.read_text() != LITELLM_REQUIREMENT:
        log(f"installing {LITELLM_REQUIREMENT} into {venv} (once; a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", LITELLM_REQUIREMENT], check=True)
        marker.write_text(LITELLM_REQUIREMENT)
    return python


@contextmanager
def _litellm(work: Path, backend_url: str, log: Callable[[str], None]) -> Iterator[str]:
    python = _litellm_python(log)
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench-chat\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: {backend_url}/v1\n"
        "      api_key: sk-bench\n"
    )
    port = free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    process = subprocess.Popen(
        [str(python.parent / "litellm"), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/health/liveliness", process)
        yield url
    finally:
        stop(process)
