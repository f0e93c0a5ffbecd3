"""`manage.py cluster_agent --cluster NAME --port N`: the local driver's agent for one cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from deployments.agent import build_agent_app
from deployments.internal_tokens import agent_token


def _gpu_indices(given: str | None) -> list[str] | None:
    """None: detect with nvidia-smi; "" or "none": no GPUs; else comma-separated indices."""
    if given is None:
        return None
    if given.strip().lower() in ("", "none"):
        return []
    indices = [index.strip() for index in given.split(",") if index.strip()]
    if not all(index.isdigit() for index in indices):
        raise CommandError(f"--gpus takes GPU indices like 0,1 (or none), not {given!r}")
    return indices


class Command(BaseCommand):
    help = "Run a local cluster agent that starts and stops model-server processes on this machine."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cluster", required=True)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument(
            "--replica-host", default="127.0.0.1", help="Address replicas listen on (0.0.0.0 for a cluster on another machine)."
        )
        parser.add_argument("--advertise-host", default="127.0.0.1", help="Address the control plane and gateways reach replicas at.")
        parser.add_argument(
            "--gpus",
            help="GPU indices this agent owns, e.g. 0,1 (default: what nvidia-smi lists; none: no GPU, replicas on the CPU as simulated).",
        )
        parser.add_argument("--node-name", default="", help="The node name replicas report (default: this host's name).")
        parser.add_argument(
            "--state-file", help="Where the agent records its replicas, for a restarted agent to adopt (default: the data directory)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # On this install the token derives from its internal secret; an agent on another
        # machine is given it (`manage.py cluster_token NAME` prints it) in SWITCHBOARD_AGENT_TOKEN.
        token = os.environ.get("SWITCHBOARD_AGENT_TOKEN") or agent_token(options["cluster"])
        uvicorn.run(
            build_agent_app(
                options["cluster"],
                token=token,
                model_cache_dir=settings.MODEL_CACHE_DIR,
                state_file=Path(options["state_file"] or settings.DATA_DIR / "agents" / f"{options['cluster']}.json"),
                replica_host=options["replica_host"],
                advertise_host=options["advertise_host"],
                gpus=_gpu_indices(options["gpus"]),
                node=options["node_name"],
            ),
            host=options["host"],
            port=options["port"],
            log_level="warning",
        )
