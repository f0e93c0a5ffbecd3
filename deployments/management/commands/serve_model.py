"""`manage.py serve_model --model NAME --port N`: one model server process (a replica)."""

from __future__ import annotations

import os
from typing import Any

import torch
from django.core.management.base import BaseCommand, CommandError, CommandParser

from deployments.serving.app import ServerOptions
from deployments.serving.catalog import CATALOG
from deployments.serving.server import serve


class Command(BaseCommand):
    help = "Serve one catalog model over an OpenAI-compatible HTTP API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, choices=sorted(CATALOG))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument("--max-batch-size", type=int, default=None, help="Sequences per decode step (default 16) / inputs per embedding pass (default 32).")
        parser.add_argument("--max-wait-ms", type=float, default=5.0, help="Longest wait to fill an embedding batch.")
        parser.add_argument("--max-queue", type=int, default=None, help="Waiting requests (chat) or inputs (embeddings) before 503.")
        parser.add_argument(
            "--parallel-batches", type=int, default=None, help="Embeddings: forward passes in flight at once, each with its share of the CPU cores (default: 2 on CPU, 1 on a GPU)."
        )
        parser.add_argument("--no-batching", action="store_true", help="Batch size 1: one request at a time.")
        parser.add_argument("--drain-seconds", type=float, default=30.0, help="On SIGTERM, how long requests in flight may take to finish.")

    def handle(self, *args: Any, **options: Any) -> None:
        spec = CATALOG[options["model"]]
        chat = spec.task == "chat"
        batch = 1 if options["no_batching"] else options["max_batch_size"] or (16 if chat else 32)
        # On CPU two single-threaded passes beat one two-threaded pass: neither waits on the
        # other's threads when the event loop takes a core for a moment.
        parallel = 1 if options["no_batching"] or chat else options["parallel_batches"] or (1 if torch.cuda.is_available() else min(2, os.cpu_count() or 1))
        queue = options["max_queue"] or (64 if chat else 2048)
        if batch < 1 or queue < 1 or parallel < 1:
            raise CommandError("--max-batch-size, --max-queue and --parallel-batches must be at least 1")
        serve(
            spec.name,
            host=options["host"],
            port=options["port"],
            options=ServerOptions(max_batch_size=batch, max_wait_ms=options["max_wait_ms"], max_queue=queue, parallel_batches=parallel),
            drain_seconds=options["drain_seconds"],
        )
