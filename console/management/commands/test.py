"""`manage.py test [pytest options]`: the whole test suite, with what it needs installed.

Replaces Django's runner with pytest (and pytest-django). The browser tests drive
Debian's Chromium; if it is missing and this runs as root with apt-get, it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

CHROMIUM_PACKAGES = ["chromium"]


def ensure_chromium(stdout: object) -> None:
    if shutil.which("chromium"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("chromium is not installed and cannot be installed here (needs root and apt-get); browser tests will fail.", file=sys.stderr)
        return
    print("installing Debian's chromium for the browser tests", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *CHROMIUM_PACKAGES], check=True, env=env)


class Command(BaseCommand):
    help = "Run the test suite with pytest. Extra arguments go to pytest (e.g. -k keys, -m 'not slow')."

    def run_from_argv(self, argv: list[str]) -> None:
        ensure_chromium(self.stdout)
        result = subprocess.run([sys.executable, "-m", "pytest", *argv[2:]], cwd=settings.BASE_DIR)
        sys.exit(result.returncode)
