"""Runs the whole platform on this machine: migrations, demo data, the ASGI server
(console, API), a Celery worker and beat (the reconcile loop), and one agent per local
cluster (local-us-east, local-eu-west). Ctrl-C stops everything."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from deployments.local_clusters import LOCAL_CLUSTERS, register


class Command(BaseCommand):
    help = "Run Switchboard: console and API server, Celery worker and beat, with a seeded demo."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-seed", action="store_true", help="Do not create the demo user and organization.")
        parser.add_argument("--agent-port-base", type=int, default=9101, help="Local cluster agents listen on this port and the next.")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)

        clusters = [replace(cluster, port=options["agent_port_base"] + index) for index, cluster in enumerate(LOCAL_CLUSTERS)]
        for cluster in clusters:
            register(cluster)
        if not options["no_seed"]:
            call_command("seed_demo")
        python = sys.executable
        processes = {
            "web": [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                options["host"],
                "--port",
                str(options["port"]),
                "--no-access-log",
            ],
            "worker": [python, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=2"],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel=INFO",
                "--schedule",
                settings.CELERY_BEAT_SCHEDULE_FILENAME,
            ],
            "usage ingester": [python, "manage.py", "ingest_usage"],
        }
        for cluster in clusters:
            processes[f"agent {cluster.name}"] = [
                python,
                "manage.py",
                "cluster_agent",
                "--cluster",
                cluster.name,
                "--port",
                str(cluster.port),
            ]
        children = {name: subprocess.Popen(cmd, cwd=settings.BASE_DIR) for name, cmd in processes.items()}
        stack = "PostgreSQL + Redis" if settings.REDIS_URL else "embedded (SQLite, filesystem broker)"
        self.stdout.write(
            self.style.SUCCESS(f"Switchboard is up on http://{options['host']}:{options['port']}/ ({stack}). Ctrl-C stops it.")
        )

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with {child.returncode}; stopping the rest.")
                    exit_code = child.returncode or 1
                    stopping = True
                    break
            time.sleep(0.5)
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(exit_code)
