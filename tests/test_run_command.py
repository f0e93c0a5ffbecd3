"""The README's run command, end to end: `manage.py up` on the embedded default brings up
the console with the demo login working, restarts a child that dies, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from modelserver.processes import free_port_run
from tests.servers import ROOT, child_env, free_port, wait_until_up

pytestmark = pytest.mark.slow


def _login(base_url: str, email: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base_url) as client:
        form = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        return client.post("/accounts/login/", data={"username": email, "password": password, "csrfmiddlewaretoken": token})


def _pid_of(*words: str) -> int:
    """The process whose command line holds all these words (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(word.encode() in arguments for word in words):
            return int(entry.name)
    raise LookupError(words)


def test_up_serves_the_console_with_the_demo_login(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(SWITCHBOARD_DATA_DIR=str(tmp_path))
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "up.log"
    log = log_path.open("wb")
    agent_base = free_port_run(2)  # up's two local clusters listen on it and the next
    command = [sys.executable, "manage.py", "up", "--port", str(port), "--agent-port-base", str(agent_base)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/accounts/login/", process, timeout=90)
        response = _login(f"http://127.0.0.1:{port}", "demo@switchboard.local", "switchboard-demo")
        assert response.status_code == 302 and response.headers["location"] == "/"
        assert _login(f"http://127.0.0.1:{port}", "demo@switchboard.local", "wrong-password").status_code == 200
        assert (tmp_path / "switchboard.sqlite3").exists()
        # Both local clusters' agents answer.
        for agent_port in (agent_base, agent_base + 1):
            wait_until_up(f"http://127.0.0.1:{agent_port}/replicas", process, timeout=60)
        # A child that dies is restarted; the rest, and `up`, keep running.
        agent = _pid_of("cluster_agent", str(agent_base))
        os.kill(agent, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "agent local-us-east restarted" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_until_up(f"http://127.0.0.1:{agent_base}/replicas", process, timeout=60)
        assert _pid_of("cluster_agent", str(agent_base)) != agent
        assert httpx.get(f"http://127.0.0.1:{port}/accounts/login/").status_code == 200
        # The Celery worker connects to the filesystem broker that needs no server.
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    output = log_path.read_text()
    assert process.returncode == 0, output
    assert "Demo login: demo@switchboard.local / switchboard-demo" in output
    assert "Connected to config.broker:Transport://" in output and "ready." in output  # the atomic filesystem broker
    assert "up: agent local-us-east exited with -9" in output
