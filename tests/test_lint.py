"""The hygiene CI holds the code to: ruff's lint (with the 140-character line limit and
at most 12 paths through a function), ruff's format, and the import contracts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.conf import settings


def _run(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=timeout)


def test_ruff_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_in_ruff_format() -> None:
    result = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, "run `.venv/bin/ruff format .`:\n" + result.stdout + result.stderr


def test_import_contracts_hold() -> None:
    """The layer contracts in pyproject.toml ([tool.importlinter]), checked by import-linter."""
    result = _run(str(Path(sys.executable).parent / "lint-imports"), "--no-cache", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
