"""Creates the demo login, organization, deployments and route. Safe to run again: it
changes nothing that exists."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from deployments.models import Cluster, Deployment
from deployments.services import DeploymentSpec, create_deployment
from routing.models import ModelRoute
from routing.services import RouteSpec, TargetSpec, create_route
from tenancy import selectors, services
from tenancy.context import OrgContext
from tenancy.models import Role, User

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
        membership = selectors.memberships_of(user).filter(organization__name=DEMO_ORG).select_related("organization").first()
        org = membership.organization if membership else services.create_organization(user, DEMO_ORG)
        self._seed_models(OrgContext(organization=org, role=Role.OWNER, user=user))
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (owner of {DEMO_ORG}, platform staff)")

    def _seed_models(self, ctx: OrgContext) -> None:
        """Two deployments that scale to zero (the first request wakes them, so an idle demo
        costs no CPU) and a route in front of the chat one."""
        regions = tuple(sorted(set(Cluster.objects.filter(status=Cluster.Status.ACTIVE).values_list("region", flat=True))))
        if not regions:
            self.stdout.write("No clusters registered; the demo deployments are skipped.")
            return
        existing = set(Deployment.objects.for_org(ctx.organization).filter(deleted_at=None).values_list("name", flat=True))
        for name, model in (("chat", "smollm2-135m-instruct"), ("embed", "all-minilm-l6-v2")):
            if name not in existing:
                spec = DeploymentSpec(
                    model=model, gpu_type="CPU", allowed_regions=regions, min_replicas=0, max_replicas=2, idle_timeout_s=600
                )
                create_deployment(ctx, name=name, spec=spec)
        if not ModelRoute.objects.for_org(ctx.organization).filter(name="chat-default").exists():
            chat = Deployment.objects.for_org(ctx.organization).get(name="chat", deleted_at=None)
            create_route(ctx, RouteSpec(name="chat-default", strategy="ordered", targets=(TargetSpec(deployment_id=chat.pk),)))
