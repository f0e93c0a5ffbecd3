"""Runs the whole platform on this machine: migrations, demo data, the ASGI server
(console, API), a Celery worker and beat (the reconcile loop), the usage ingester and one
agent per local cluster (local-us-east, local-eu-west), each restarted if it exits. With
`--ray` (or SWITCHBOARD_RAY=1) the clusters are instead two namespaces (ray-us-east,
ray-eu-west) of a local Ray cluster whose head node is one more supervised child.
Ctrl-C (or SIGTERM) stops everything."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from console.supervisor import Supervisor
from deployments.agent import detected_gpus
from deployments.local_clusters import LOCAL_CLUSTERS, SIMULATED_INVENTORY, cordon_other_mode, register, register_on_ray
from deployments.local_ray import RayNode, head_command, node_environment


class Command(BaseCommand):
    help = "Run Switchboard: console and API server, Celery worker and beat, with a seeded demo."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-seed", action="store_true", help="Do not create the demo user and organization.")
        parser.add_argument("--agent-port-base", type=int, default=9101, help="Local cluster agents listen on this port and the next.")
        parser.add_argument(
            "--ray",
            action="store_true",
            default=os.environ.get("SWITCHBOARD_RAY", "") in ("1", "true", "yes"),
            help="Run the clusters on a local Ray cluster (Ray Serve) instead of local agents. Also SWITCHBOARD_RAY=1.",
        )
        parser.add_argument("--ray-port", type=int, default=6390, help="The local Ray head's port (--ray).")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)

        clusters = [replace(cluster, port=options["agent_port_base"] + index) for index, cluster in enumerate(LOCAL_CLUSTERS)]
        ray_temp_dir: Path | None = None
        ray_address = f"127.0.0.1:{options['ray_port']}"
        registered = [register_on_ray(cluster, address=ray_address) if options["ray"] else register(cluster) for cluster in clusters]
        cordon_other_mode(running=[cluster.name for cluster in registered])
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
                # Longer than any client's idle-connection expiry (httpx and the OpenAI SDK
                # keep 5 s), so a client never reuses a connection the server is closing.
                "--timeout-keep-alive",
                "75",
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
        if options["ray"]:
            # One node with this machine's CPUs and the demo's simulated GPUs as resources
            # (gpu_type:T4 ...), which the Ray driver places GPU replicas by; a short temp
            # path, as Ray's socket paths must stay under the OS limit.
            simulated = {f"gpu_type:{gpu}": float(count) for gpu, count in SIMULATED_INVENTORY.items() if gpu != "CPU"}
            # On a machine with real GPUs, Ray gets exactly those (never indices that do
            # not exist); without any, the simulated ones, as the agents declare them.
            gpus = len(detected_gpus()) or int(sum(simulated.values()))
            head = RayNode(cpus=float(os.cpu_count() or 2), gpus=gpus, resources=simulated)
            ray_temp_dir = Path(tempfile.mkdtemp(prefix="sbray", dir="/tmp"))
            processes["ray head"] = head_command(head, port=options["ray_port"], temp_dir=ray_temp_dir)
            # Ray's workers import the model server's actor from this project.
            os.environ.update(
                {
                    key: value
                    for key, value in node_environment(Path(settings.BASE_DIR)).items()
                    if key not in os.environ or key == "PYTHONPATH"
                }
            )
        else:
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
        supervisor = Supervisor(processes, cwd=Path(settings.BASE_DIR), log=lambda line: self.stderr.write(f"up: {line}"))
        supervisor.start()
        stack = "PostgreSQL + Redis" if settings.REDIS_URL else "embedded (SQLite, filesystem broker)"
        stack += f", clusters on a local Ray cluster at {ray_address}" if options["ray"] else ""
        self.stdout.write(
            self.style.SUCCESS(f"Switchboard is up on http://{options['host']}:{options['port']}/ ({stack}). Ctrl-C stops it.")
        )

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        # A child that exits is restarted (console/supervisor.py); only a signal stops `up`.
        while not stopping:
            supervisor.tick()
            time.sleep(0.5)
        supervisor.stop()
        if ray_temp_dir is not None:
            shutil.rmtree(ray_temp_dir, ignore_errors=True)
