"""Creates the demo login and organization. Safe to run again: it changes nothing that exists."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from console import selectors, services
from console.models import User

DEMO_EMAIL = "demo@switchboard.local"
DEMO_PASSWORD = "switchboard-demo"
DEMO_ORG = "Demo Org"


class Command(BaseCommand):
    help = "Seed the demo user (platform staff too) and the Demo Org."

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = User.objects.create_user(DEMO_EMAIL, DEMO_PASSWORD, full_name="Demo User", is_staff=True)
        if not selectors.memberships_of(user).filter(organization__name=DEMO_ORG).exists():
            services.create_organization(user, DEMO_ORG)
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (owner of {DEMO_ORG}, platform staff)")
