"""`manage.py ingest_usage [--once]`: move usage events from the gateway's durable hand-off
(spool files, and the Redis stream when REDIS_URL is set) into the database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from metering import ingest


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Write what is there now, then exit.")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Parallel database writers (default: one per core on PostgreSQL, up to 4; one on SQLite).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers = options["workers"] or ingest.default_workers()
        if options["once"]:
            written = ingest.ingest_available(ingest.sources(), workers)
            self.stdout.write(f"{written} usage events written")
            return
        ingest.run_forever(workers)
