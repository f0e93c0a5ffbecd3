"""Starting real server processes for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.db import connection

from modelserver.processes import free_port, stop
from modelserver.processes import model_server as serving_process

ROOT = Path(settings.BASE_DIR)


def child_database_url() -> str:
    """DATABASE_URL naming the database this test session uses, for child processes."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{credentials + '@' if credentials else ''}{host}/{db['NAME']}"


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a server process the tests start: this session's secrets passed
    on, so a child with a data directory of its own still signs, hashes and derives
    internal tokens as this process and the other children do."""
    env = {
        **os.environ,
        "SWITCHBOARD_NO_BOOTSTRAP": "1",
        "PYTHONUNBUFFERED": "1",
        "SWITCHBOARD_SECRET_KEY": settings.SECRET_KEY,
        "SWITCHBOARD_API_KEY_SECRET": settings.API_KEY_HMAC_SECRET,
        "SWITCHBOARD_PROVIDER_KEY_SECRETS": ",".join(settings.PROVIDER_KEY_SECRETS),
        "SWITCHBOARD_INTERNAL_SECRET": settings.INTERNAL_SECRET,
        "SWITCHBOARD_METRICS_TOKEN": settings.GATEWAY_METRICS_TOKEN,
    }
    env.update(overrides)
    return env


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def asgi_server(env: dict[str, str]) -> Iterator[str]:
    with asgi_server_process(env) as (base_url, _):
        yield base_url


@contextmanager
def asgi_server_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The platform's ASGI app (console, API, gateway) under uvicorn; yields its base URL
    and the process, for a test that kills it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url + "/accounts/login/", process)
        yield base_url, process
    finally:
        stop(process)


@contextmanager
def usage_ingester(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py ingest_usage`: what moves the gateways' usage events into the database."""
    process = subprocess.Popen([sys.executable, "manage.py", "ingest_usage"], cwd=ROOT, env=env)
    try:
        yield process
    finally:
        stop(process)


@contextmanager
def model_server(model: str, *options: str, wait_ready: bool = True) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `python -m modelserver` process; yields its base URL and the process."""
    with serving_process(model, *options, cache_dir=settings.MODEL_CACHE_DIR, wait=wait_ready) as server:
        yield server.url, server.process
