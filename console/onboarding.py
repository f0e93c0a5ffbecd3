"""The getting-started checklist on an organization's Overview: deploy a model, give it a
public name (a route), create an API key, make a first call, set a budget. Each step is
done when the organization has what it asks for, whoever did it."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from billing.invoices import account_for
from deployments.selectors import live_deployments
from metering.models import UsageEvent
from routing import selectors as routing_selectors
from routing.models import ModelRoute
from tenancy import selectors as tenancy_selectors
from tenancy.models import Organization


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    why: str
    done: bool
    href: str
    action: str


def checklist(org: Organization) -> list[Step]:
    slug = org.slug
    has_key_budget = tenancy_selectors.api_keys(org).exclude(monthly_budget=None).exists()
    has_route_budget = ModelRoute.objects.for_org(org).exclude(monthly_budget=None).exists()
    return [
        Step(
            "deploy",
            "Deploy a model",
            "A built-in model or one of your own, on the hardware and regions you choose.",
            live_deployments(org).exists(),
            reverse("deployment-create", kwargs={"org_slug": slug}),
            "Deploy",
        ),
        Step(
            "route",
            "Give it a public name",
            "A route names a model for your callers and decides where requests go: cost, latency, regions, fallbacks.",
            routing_selectors.routes(org).exists(),
            reverse("route-create", kwargs={"org_slug": slug}),
            "Create a route",
        ),
        Step(
            "key",
            "Create an API key",
            "Your code calls /v1 with it, through the official OpenAI SDKs.",
            any(key.status == "active" for key in tenancy_selectors.api_keys(org)),
            reverse("keys", kwargs={"org_slug": slug}),
            "Create a key",
        ),
        Step(
            "call",
            "Make a first call",
            "The Usage page has the snippet; the request then shows on the Requests page.",
            UsageEvent.objects.for_org(org).exclude(key_id="").exists(),
            reverse("usage", kwargs={"org_slug": slug}),
            "See how",
        ),
        Step(
            "budget",
            "Set a budget",
            "A monthly budget warns the owners at 50%, 80% and 100%; keys and routes can have their own.",
            account_for(org).monthly_budget is not None or has_key_budget or has_route_budget,
            reverse("billing", kwargs={"org_slug": slug}),
            "Set a budget",
        ),
    ]
