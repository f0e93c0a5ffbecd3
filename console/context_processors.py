from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from tenancy import selectors

# The console's navigation. `built` is False for pages whose issue has not landed yet;
# those pages say so instead of showing made-up data.
NAV_ITEMS = [
    ("overview", "Overview"),
    ("deployments", "Deployments"),
    ("models", "Models"),
    ("routing", "Routing"),
    ("playground", "Playground"),
    ("usage", "Usage"),
    ("requests", "Requests"),
    ("billing", "Billing"),
    ("keys", "API keys"),
    ("members", "Members"),
    ("audit", "Audit log"),
    ("settings", "Settings"),
]


def console_nav(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    ctx = getattr(request, "org_ctx", None)
    return {
        "org_ctx": ctx,
        "my_memberships": list(selectors.memberships_of(user)),
        "nav_items": NAV_ITEMS,
    }
