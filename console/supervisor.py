"""Keeping `up`'s child processes running: a child that exits is logged and started again
after a back-off that doubles with each quick failure (1 s, 2 s, 4 s ... 60 s) and resets
once it has run for a minute. Only the caller stops the children (on Ctrl-C or SIGTERM):
one crashed process is never a reason to stop the platform."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Backoff:
    first_s: float = 1.0
    most_s: float = 60.0
    stable_after_s: float = 60.0  # a child that ran this long starts its back-off afresh

    def delay(self, quick_failures: int) -> float:
        return min(self.most_s, self.first_s * 2 ** max(0, quick_failures - 1))


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    quick_failures: int = 0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        cwd: Path,
        log: Callable[[str], None],
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [Child(name, command) for name, command in commands.items()]
        self.cwd = cwd
        self.log = log
        self.backoff = backoff or Backoff()
        self.clock = clock

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def tick(self) -> None:
        """Notices exits and restarts what is due; call it every fraction of a second."""
        now = self.clock()
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                code = child.process.returncode
                child.exits.append(code)
                child.process = None
                ran_s = now - child.started_at
                child.quick_failures = 1 if ran_s >= self.backoff.stable_after_s else child.quick_failures + 1
                wait_s = self.backoff.delay(child.quick_failures)
                child.restart_at = now + wait_s
                self.log(f"{child.name} exited with {code} after {ran_s:.1f} s; restarting it in {wait_s:g} s")
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                self.log(f"{child.name} restarted (restart {child.restarts})")

    def stop(self, grace_s: float = 15.0) -> None:
        """Asks every child to stop, and kills what is still running after `grace_s`."""
        running = [child.process for child in self.children if child.process is not None and child.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace_s
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(child.command, cwd=self.cwd)
        child.started_at = self.clock()
        child.restart_at = None
