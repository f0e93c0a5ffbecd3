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
from openai import OpenAI

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


def test_up_with_ray_serves_the_demo_on_ray_serve_and_leaves_no_ray_behind(tmp_path: Path) -> None:
    """`up --ray`: the demo's clusters are namespaces of a local Ray cluster (its head a
    supervised child); a chat through the gateway wakes the demo deployment on Ray Serve;
    Ctrl-C stops Ray with everything else."""
    port, ray_port = free_port(), free_port()
    env = child_env(SWITCHBOARD_DATA_DIR=str(tmp_path))
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "up.log"
    log = log_path.open("wb")
    command = [sys.executable, "manage.py", "up", "--ray", "--port", str(port), "--ray-port", str(ray_port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/accounts/login/", process, timeout=120)
        issued = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SHELL_ISSUE_DEMO_KEY],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = issued.stdout.strip().splitlines()[-1]
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=240)
        answer = client.chat.completions.create(model="chat-default", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
        assert answer.choices[0].message.content is not None
        placed = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SHELL_READY_REPLICAS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "ray-" in placed and "local-" not in placed, placed  # on Ray, never on the cordoned agents' clusters
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=90)
        log.close()
    # The Ray head is gone with `up`, and with it its cluster: the GCS and raylet (which
    # name its port) and the model servers its Serve replicas started (in Ray's default
    # model folder, switchboard-models).
    lines = _command_lines()
    leftover = [line for line in lines if f":{ray_port}" in line or f"={ray_port}" in line]
    leftover += [line for line in lines if "-m modelserver" in line and "switchboard-models" in line]
    assert leftover == [], leftover


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


SHELL_ISSUE_DEMO_KEY = """
from tenancy import services
from tenancy.context import OrgContext
from tenancy.models import Membership, Organization, Role
org = Organization.objects.get(name="Demo Org")
owner = Membership.objects.for_org(org).filter(role="owner").first()
ctx = OrgContext(organization=org, user=owner.user, role=Role(owner.role))
print(services.create_api_key(ctx, name="ray test", scopes=["inference"]).plaintext)
"""

SHELL_READY_REPLICAS = """
from deployments.models import Replica
print(list(Replica.objects.unscoped_across_tenants().filter(state="ready").values_list("cluster_id", "device")))
"""
