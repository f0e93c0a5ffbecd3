"""`manage.py cluster_agent --cluster NAME --port N`: the local driver's agent for one cluster."""

from __future__ import annotations

from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from deployments.agent import build_agent_app


class Command(BaseCommand):
    help = "Run a local cluster agent that starts and stops model-server processes on this machine."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cluster", required=True)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        uvicorn.run(
            build_agent_app(options["cluster"], model_cache_dir=settings.MODEL_CACHE_DIR),
            host=options["host"],
            port=options["port"],
            log_level="warning",
        )
