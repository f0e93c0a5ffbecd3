"""The gateway's access log: one JSON line per request on stderr, carrying its request id
and figures, never prompt or completion text.

Lines are collected in memory and written together every FLUSH_S by a thread: a write per
request (what logging.StreamHandler does) cost more than the rest of the gateway's work on
a small request.
"""

from __future__ import annotations

import asyncio
import os
import sys

FLUSH_S = 0.2
MAX_PENDING = 100_000


class AccessLog:
    def __init__(self, enabled: bool, fd: int | None = None) -> None:
        self.enabled = enabled
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._lines: list[bytes] = []
        self._scheduled = False

    def write(self, line: bytes) -> None:
        if not self.enabled or len(self._lines) >= MAX_PENDING:
            return
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        lines, self._lines = self._lines, []
        if lines:
            asyncio.get_running_loop().run_in_executor(None, self._write_all, b"\n".join(lines) + b"\n")

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def flush_now(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            self._write_all(b"\n".join(lines) + b"\n")
