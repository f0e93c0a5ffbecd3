"""The model-server processes a cluster agent runs, and the file that lets a restarted agent
take them back.

An agent that dies (killed, crashed, upgraded) must not take its replicas with it: they
keep serving traffic while `up` restarts the agent, as a kubelet restart leaves its pods
running. The agent writes what it runs (replica, model, endpoint, pid) to a state file
after every change; a new agent reads it and adopts each process that is still the same
model server (checked against /proc, so a recycled pid is never adopted)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from modelserver.processes import stop

log = logging.getLogger(__name__)


class ReplicaProcess(Protocol):
    @property
    def pid(self) -> int: ...

    def running(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def terminate(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


class ChildProcess:
    """A model server this agent started: its exit code is ours to read."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> None:
        stop(self.process, timeout)


class AdoptedProcess:
    """A model server an earlier agent started. It is not our child, so its exit code went
    to whoever reaped it: we know only whether it still runs."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    @property
    def pid(self) -> int:
        return self._pid

    def running(self) -> bool:
        return process_alive(self._pid)

    def exit_code(self) -> int | None:
        return None

    def terminate(self) -> None:
        _signal(self._pid, signal.SIGTERM)

    def stop(self, timeout: float) -> None:
        self.terminate()
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running():
            _signal(self._pid, signal.SIGKILL)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def process_alive(pid: int) -> bool:
    """Running and not a zombie waiting for a parent that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]  # the name in parentheses may hold spaces
    return state not in ("Z", "X")


def _is_model_server(pid: int, endpoint: str) -> bool:
    """The pid still runs `python -m modelserver` on the endpoint's port."""
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    port = str(urlsplit(endpoint).port)
    return "modelserver" in argv and "--port" in argv and argv[argv.index("--port") + 1 : argv.index("--port") + 2] == [port]


@dataclass(frozen=True)
class RecordedReplica:
    replica_id: str
    model: str
    endpoint: str
    pid: int
    gpu_type: str = "CPU"
    devices: tuple[str, ...] = ()  # the GPU indices pinned to it (CUDA_VISIBLE_DEVICES)
    device: str = "cpu"


class StateFile:
    """What an agent runs, on disk: replaced atomically, so a crash mid-write leaves the
    previous state, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, replicas: list[RecordedReplica]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps([replica.__dict__ for replica in replicas]))
        os.replace(partial, self.path)

    def adoptable(self) -> list[RecordedReplica]:
        """The recorded replicas whose process is still the same model server."""
        try:
            rows = json.loads(self.path.read_text())
            recorded = [RecordedReplica(**{**row, "devices": tuple(row.get("devices", ()))}) for row in rows]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as error:
            log.warning("ignoring the unreadable agent state %s: %s", self.path, error)
            return []
        alive = [replica for replica in recorded if _is_model_server(replica.pid, replica.endpoint)]
        for gone in set(recorded) - set(alive):
            log.info("replica %s (pid %s) is gone; not adopting it", gone.replica_id, gone.pid)
        return alive
