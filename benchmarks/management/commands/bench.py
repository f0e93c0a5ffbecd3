"""`manage.py bench NAME [--json]`: benchmarks that print ratios measured side by side in
one run. Each benchmark is a module of this package."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

BENCHMARKS = {
    "serving": "benchmarks.serving",
    "controlplane": "benchmarks.controlplane",
    "gateway": "benchmarks.gateway",
    "metering": "benchmarks.metering",
    "soak": "benchmarks.soak",
    "gpu": "benchmarks.gpu",
}


class Command(BaseCommand):
    help = "Run a benchmark: " + ", ".join(BENCHMARKS)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=sorted(BENCHMARKS))
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
        parser.add_argument("--seconds", type=float, default=10.0, help="Length of each timed load phase.")
        parser.add_argument("--minutes", type=float, default=None, help="The same in minutes (for soak).")

    def handle(self, *args: Any, **options: Any) -> None:
        module = importlib.import_module(BENCHMARKS[options["name"]])
        progress = (lambda line: print(line, file=sys.stderr, flush=True)) if options["json"] else self.stdout.write
        try:
            seconds = options["minutes"] * 60 if options["minutes"] is not None else options["seconds"]
            figures = module.run(seconds=seconds, log=progress)
        except RuntimeError as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(figures.as_json()))
        else:
            self.stdout.write(module.table(figures))
