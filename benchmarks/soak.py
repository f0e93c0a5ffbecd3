"""`manage.py bench soak --minutes N`: `up`'s whole embedded stack (console, API, gateway,
Celery worker and beat, the usage ingester, two cluster agents and their model servers) in
a fresh data directory, under mixed load for N minutes, all through HTTP as users would:

- the gateway: embeddings through the demo's `embed` deployment without pause, and a short
  chat through the `chat-default` route every 20 s (the official wire format, real models);
- the console: a signed-in owner reading pages and creating, then revoking, API keys;
- the management API: reading usage and keys, creating and revoking keys.

The reconcile loop and the ingester run as they always do. It reports every answer by
kind and status, every 5xx, every child process that died (`up` restarts it and logs it),
and whether each answered gateway request's usage event was stored exactly once (read
back through /api/v1/usage/events.csv). Nothing is stubbed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from modelserver.processes import free_port, free_port_run

ORG = "demo-org"
EMAIL, PASSWORD = "demo@switchboard.local", "switchboard-demo"
USAGE_WAIT_S = 90.0


@dataclass
class SoakFigures:
    seconds: float
    answers: Counter[str] = field(default_factory=Counter)  # "kind status"
    server_errors: list[str] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)
    served: int = 0  # gateway requests answered 200
    stored_once: int = 0
    missing: int = 0
    duplicated: int = 0
    up_exit: int | None = None

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "minutes": round(self.seconds / 60, 2),
            "requests": self.requests,
            "answers": dict(sorted(self.answers.items())),
            "server_errors": self.server_errors,
            "deaths": self.deaths,
            "gateway_served": self.served,
            "usage_stored_once": self.stored_once,
            "usage_missing": self.missing,
            "usage_duplicated": self.duplicated,
            "up_exit_code": self.up_exit,
        }


class _Recorder:
    def __init__(self, figures: SoakFigures) -> None:
        self.figures = figures
        self.lock = threading.Lock()
        self.request_ids: list[str] = []

    def answer(self, kind: str, response: httpx.Response | None, what: str) -> None:
        status = response.status_code if response is not None else 0  # 0: no answer at all
        with self.lock:
            self.figures.answers[f"{kind} {status}"] += 1
            if status >= 500 or status == 0:
                body = response.text[:200] if response is not None else ""
                self.figures.server_errors.append(f"{kind} {what}: {status} {body}")
            if kind == "gateway" and status == 200 and response is not None:
                self.request_ids.append(response.headers["x-request-id"])

    def call(self, kind: str, what: str, send: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> httpx.Response | None:
        try:
            response = send(*args, **kwargs)
        except httpx.HTTPError as error:
            self.answer(kind, None, f"{what} ({type(error).__name__})")
            return None
        self.answer(kind, response, what)
        return response


def _csrf(client: httpx.Client) -> str:
    return client.cookies.get("csrftoken") or ""


def _signed_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=120, follow_redirects=False)
    client.get("/accounts/login/")
    answer = client.post("/accounts/login/", data={"username": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": _csrf(client)})
    if answer.status_code != 302:
        raise RuntimeError(f"could not sign in to the demo: {answer.status_code}")
    return client


def _new_key(console: httpx.Client, name: str, scopes: list[str]) -> tuple[str, httpx.Response]:
    answer = console.post(f"/o/{ORG}/keys/", data={"name": name, "scopes": scopes, "csrfmiddlewaretoken": _csrf(console)})
    found = re.search(r'value="(sbk_[^"]+)"[^>]*data-testid="new-key-secret"', answer.text)
    return (found.group(1) if found else ""), answer


def _key_page(console: httpx.Client, name: str) -> httpx.Response:
    return _new_key(console, name, ["read"])[1]


def _gateway(base: str, key: str, record: _Recorder, until: float) -> None:
    with httpx.Client(base_url=base, timeout=180, headers={"Authorization": f"Bearer {key}"}) as client:
        next_chat, index = 0.0, 0
        while time.monotonic() < until:
            index += 1
            body = {"model": "embed", "input": [f"soak sentence {index}", "another sentence to embed"]}
            answer = record.call("gateway", "embeddings", client.post, "/v1/embeddings", json=body)
            if answer is not None and answer.status_code == 429:  # as the OpenAI SDK does: wait as told
                time.sleep(float(answer.headers.get("retry-after", "1")))
            if time.monotonic() >= next_chat:
                chat = {"model": "chat-default", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
                record.call("gateway", "chat", client.post, "/v1/chat/completions", json=chat)
                next_chat = time.monotonic() + 20


def _console(console: httpx.Client, record: _Recorder, until: float) -> None:
    pages = [f"/o/{ORG}/", f"/o/{ORG}/usage/", f"/o/{ORG}/deployments/", f"/o/{ORG}/routing/", f"/o/{ORG}/billing/", f"/o/{ORG}/audit/"]
    index = 0
    while time.monotonic() < until:
        index += 1
        page = pages[index % len(pages)]
        record.call("console", page, console.get, page)
        if index % 3 == 0:
            key = record.call("console", "create key", _key_page, console, f"soak-{index}")
            found = re.findall(r'action="(/o/[^"]+/keys/[^/"]+/revoke/)"', key.text if key is not None else "")
            if found:
                record.call("console", "revoke key", console.post, found[0], data={"csrfmiddlewaretoken": _csrf(console)})
        time.sleep(0.5)  # a person's pace, not a flood: the gateway is the load


def _api(base: str, key: str, record: _Recorder, until: float) -> None:
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        index = 0
        while time.monotonic() < until:
            index += 1
            record.call("api", "usage", client.get, "/api/v1/usage/?granularity=hour")
            record.call("api", "keys", client.get, "/api/v1/keys/")
            created = record.call("api", "create key", client.post, "/api/v1/keys/", json={"name": f"api-{index}", "scopes": ["read"]})
            if created is not None and created.status_code == 201:
                key_id = created.json()["id"]
                record.call("api", "revoke key", client.delete, f"/api/v1/keys/{key_id}/")
            time.sleep(0.5)  # a person's pace, not a flood: the gateway is the load


def _stored_usage(base: str, key: str, request_ids: list[str], figures: SoakFigures, log: Callable[[str], None]) -> None:
    figures.served = len(request_ids)
    wanted = set(request_ids)
    deadline = time.monotonic() + USAGE_WAIT_S
    counts: Counter[str] = Counter()
    while True:
        export = httpx.get(base + "/api/v1/usage/events.csv?days=1", headers={"Authorization": f"Bearer {key}"}, timeout=120)
        counts = Counter(row["request_id"] for row in csv.DictReader(io.StringIO(export.text)) if row["request_id"] in wanted)
        if len(counts) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    figures.stored_once = sum(1 for request_id in wanted if counts[request_id] == 1)
    figures.duplicated = sum(1 for request_id in wanted if counts[request_id] > 1)
    figures.missing = sum(1 for request_id in wanted if counts[request_id] == 0)
    log(f"soak: usage of {figures.served} served requests: {figures.stored_once} stored once, {figures.missing} missing")


def _up(data_dir: Path, port: int, log_file: Any) -> subprocess.Popen[bytes]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL") and not key.startswith("SWITCHBOARD_")
    }
    env.update({"SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_NO_BOOTSTRAP": "1", "PYTHONUNBUFFERED": "1"})
    command = [sys.executable, "manage.py", "up", "--port", str(port), "--agent-port-base", str(free_port_run(2))]
    return subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def _wait_up(base: str, process: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"up exited with {process.returncode} before serving")
        try:
            if httpx.get(base + "/accounts/login/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"up did not serve within {timeout:.0f} s")


def run(*, seconds: float = 120.0, log: Callable[[str], None] = print) -> SoakFigures:
    figures = SoakFigures(seconds=seconds)
    with tempfile.TemporaryDirectory(prefix="switchboard-soak-") as directory:
        data_dir, port = Path(directory), free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = data_dir / "up.log"
        with log_path.open("wb") as log_file:
            process = _up(data_dir, port, log_file)
            try:
                _wait_up(base, process)
                console = _signed_in(base)
                inference_key, _ = _new_key(console, "soak-gateway", ["inference"])
                api_key, _ = _new_key(console, "soak-api", ["read", "write"])
                log(f"soak: up is serving on {base}; {seconds / 60:g} minutes of mixed load")
                record = _Recorder(figures)
                until = time.monotonic() + seconds
                workers = [
                    threading.Thread(target=_gateway, args=(base, inference_key, record, until)),
                    threading.Thread(target=_console, args=(console, record, until)),
                    threading.Thread(target=_api, args=(base, api_key, record, until)),
                ]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                log(f"soak: {figures.requests} requests, {len(figures.server_errors)} 5xx or unanswered")
                _stored_usage(base, api_key, record.request_ids, figures, log)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    figures.up_exit = process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    figures.up_exit = process.wait()
        figures.deaths = [line for line in log_path.read_text(errors="replace").splitlines() if re.search(r"^up: .* exited with", line)]
    return figures


def table(figures: SoakFigures) -> str:
    data = figures.as_json()
    answers = ", ".join(f"{name}: {count}" for name, count in data["answers"].items())
    return "\n".join(
        [
            "| figure | measured | goal |",
            "|---|---|---|",
            f"| minutes under mixed load (`up`, embedded) | {data['minutes']} | |",
            f"| requests (gateway, console, API) | {data['requests']} ({answers}) | |",
            f"| 5xx or unanswered | {len(data['server_errors'])} | 0 |",
            f"| child processes that died | {len(data['deaths'])} | 0 |",
            f"| usage events of {data['gateway_served']} served gateway requests stored exactly once | {data['usage_stored_once']} "
            f"(missing {data['usage_missing']}, twice {data['usage_duplicated']}) | all |",
            f"| `up` exit code after SIGTERM | {data['up_exit_code']} | 0 |",
        ]
    )
