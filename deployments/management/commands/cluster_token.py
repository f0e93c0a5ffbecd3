"""`manage.py cluster_token NAME`: the bearer token of a cluster's agent, for an agent that
runs on another machine (give it as SWITCHBOARD_AGENT_TOKEN there)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from deployments.internal_tokens import agent_token


class Command(BaseCommand):
    help = "Print the bearer token a cluster's agent requires."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("cluster")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(agent_token(options["cluster"]))
