"""`up`'s supervisor (console/supervisor.py) with real child processes: a child that exits
is restarted with a doubling back-off, the others are left alone, and stopping ends them
all, killing one that ignores SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from console.supervisor import Backoff, Supervisor

CRASHES = [sys.executable, "-c", "import sys; sys.exit(3)"]
RUNS = [sys.executable, "-c", "import time; time.sleep(60)"]
IGNORES_TERM = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)",
]


def _run(supervisor: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.tick()
        time.sleep(0.01)


def test_a_crashing_child_is_restarted_with_a_growing_delay_and_the_rest_left_alone(tmp_path: Path) -> None:
    lines: list[str] = []
    supervisor = Supervisor(
        {"crasher": CRASHES, "steady": RUNS}, cwd=tmp_path, log=lines.append, backoff=Backoff(first_s=0.1, most_s=0.4, stable_after_s=30)
    )
    supervisor.start()
    crasher, steady = supervisor.children
    steady_pid = steady.process.pid  # type: ignore[union-attr]
    try:
        _run(supervisor, 2.5)
        assert crasher.restarts >= 3 and set(crasher.exits) == {3}
        waits = [line.rsplit(" in ", 1)[1] for line in lines if line.startswith("crasher exited")]
        assert waits[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]  # doubling, then capped
        assert steady.process is not None and steady.process.pid == steady_pid and steady.restarts == 0
        # Killed from outside, the steady one comes back too.
        os.kill(steady_pid, signal.SIGKILL)
        _run(supervisor, 0.5)
        assert steady.restarts == 1 and steady.exits == [-signal.SIGKILL] and steady.process.poll() is None  # type: ignore[union-attr]
    finally:
        supervisor.stop(grace_s=5)
    assert all(child.process is None or child.process.poll() is not None for child in supervisor.children)


def test_stopping_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    supervisor = Supervisor({"stubborn": IGNORES_TERM}, cwd=tmp_path, log=lambda line: None)
    supervisor.start()
    [child] = supervisor.children
    time.sleep(1.0)  # let it install its handler
    started = time.monotonic()
    supervisor.stop(grace_s=1.0)
    assert child.process is not None and child.process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10
