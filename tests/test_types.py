from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings


def test_mypy_finds_nothing() -> None:
    """Every package type-checks, with one configuration (pyproject.toml, [tool.mypy]):
    the platform against Django's stubs and the `stripe` library's typed parameters, the
    model server against torch's and transformers' own annotations."""
    env = {**os.environ, "SWITCHBOARD_NO_BOOTSTRAP": "1", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=280, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
