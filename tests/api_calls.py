"""Every mutating management API call, with what it needs set up and the role it needs.
`test_the_table_covers_every_mutating_endpoint` keeps this list complete."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenancy.models import Organization, Role
from tests.factories import (
    MembershipFactory,
    create_deployment,
    create_provider,
    create_route,
    ensure_clusters,
    issue_invitation,
    issue_key,
    register_model,
    small_model_files,
    start_model_upload,
)


@dataclass(frozen=True)
class ApiCall:
    name: str
    method: str
    route: str  # as in the URL configuration
    needs: Role
    setup: Callable[[Organization], dict[str, str]]
    body: dict[str, Any] | None = None
    # What a caller with the role may get. Payment links answer 409 here (Stripe is off in
    # this table; tests/billing/test_stripe.py runs them against the Stripe double): the
    # role is checked before that.
    allowed: tuple[int, ...] = (200, 201, 204)
    query: str = ""  # appended to the URL, e.g. "?offset=0"

    def payload(self, params: dict[str, str]) -> dict[str, Any] | None:
        """The body, with "{name}" placeholders filled from the setup's ids."""
        if self.body is None:
            return None
        text = json.dumps(self.body)
        for name, value in params.items():
            text = text.replace("{" + name + "}", value)
        return json.loads(text)

    def url(self, params: dict[str, str]) -> str:
        path = self.route
        for name, value in params.items():
            path = path.replace(f"<str:{name}>", value).replace(f"<path:{name}>", value)
        return path + self.query


def _nothing(org: Organization) -> dict[str, str]:
    return {}


def _member(org: Organization) -> dict[str, str]:
    return {"member_id": MembershipFactory(organization=org, role=Role.MEMBER).id}


def _invitation(org: Organization) -> dict[str, str]:
    return {"invitation_id": issue_invitation(org, email="someone@example.test").invitation.id}


def _key(org: Organization) -> dict[str, str]:
    return {"key_id": issue_key(org, ["read"], name="target").api_key.id}


def _clusters(org: Organization) -> dict[str, str]:
    ensure_clusters()
    return {}


def _deployment(org: Organization) -> dict[str, str]:
    return {"deployment_id": create_deployment(org, name="target").id}


def _route(org: Organization) -> dict[str, str]:
    route = create_route(org, name="target-route")
    from routing.models import RouteTarget

    provider_id = RouteTarget.objects.for_org(org).filter(route=route).values_list("provider_id", flat=True).first()
    return {"route_id": route.id, "provider_id": provider_id}


def _provider(org: Organization) -> dict[str, str]:
    return {"provider_id": create_provider(org, name="target-provider").id}


def _unused_provider(org: Organization) -> dict[str, str]:
    return {"provider_id": create_provider(org, name="spare-provider").id}


def _deployment_with_two_revisions(org: Organization) -> dict[str, str]:
    from deployments import services

    deployment = create_deployment(org, name="target")
    services.update_deployment(owner_context_for(org), deployment, max_replicas=2)
    return {"deployment_id": deployment.id}


def _deployment_with_canary(org: Organization) -> dict[str, str]:
    from deployments import canaries

    deployment = create_deployment(org, name="canaried", max_replicas=2)
    plan = canaries.CanaryPlan(traffic_percent=20, window_s=600, min_requests=20)
    canaries.start_canary(owner_context_for(org), deployment, plan=plan, changes={"allowed_regions": ["eu-west"]})
    return {"deployment_id": deployment.id}


def _deployment_with_held_canary(org: Organization) -> dict[str, str]:
    from deployments import canaries
    from deployments.models import Deployment

    params = _deployment_with_canary(org)
    canaries.hold_canary(owner_context_for(org), Deployment.objects.for_org(org).get(pk=params["deployment_id"]))
    return params


def _production(org: Organization) -> dict[str, str]:
    return {"deployment_id": create_deployment(org, name="prod", environment="production").id}


def _staging_with_a_change(org: Organization) -> dict[str, str]:
    from deployments import environments, services

    production = create_deployment(org, name="prod", environment="production")
    staging = environments.create_staging(owner_context_for(org), production=production)
    services.update_deployment(owner_context_for(org), staging, allowed_regions=["eu-west"])
    return {"deployment_id": staging.id}


def _upload(org: Organization) -> dict[str, str]:
    return {"upload_id": start_model_upload(org, send=False).id, "file_path": "config.json"}


def _sent_upload(org: Organization) -> dict[str, str]:
    return {"upload_id": start_model_upload(org).id}


def _registered_model(org: Organization) -> dict[str, str]:
    return {"model_id": register_model(org).id}


def _declared(files: dict[str, bytes]) -> list[dict[str, object]]:
    import hashlib

    return [{"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for path, data in files.items()]


def owner_context_for(org: Organization):  # type: ignore[no-untyped-def]
    from tests.factories import owner_context

    return owner_context(org)


MUTATING_CALLS = [
    ApiCall("rename organization", "patch", "/api/v1/organization/", Role.ADMIN, _nothing, {"name": "Renamed Inc"}),
    ApiCall("delete organization", "delete", "/api/v1/organization/", Role.OWNER, _nothing),
    ApiCall("change member role", "patch", "/api/v1/members/<str:member_id>/", Role.ADMIN, _member, {"role": "viewer"}),
    ApiCall("remove member", "delete", "/api/v1/members/<str:member_id>/", Role.ADMIN, _member),
    ApiCall("create invitation", "post", "/api/v1/invitations/", Role.ADMIN, _nothing, {"email": "new@example.test", "role": "member"}),
    ApiCall("revoke invitation", "delete", "/api/v1/invitations/<str:invitation_id>/", Role.ADMIN, _invitation),
    ApiCall("create key", "post", "/api/v1/keys/", Role.ADMIN, _nothing, {"name": "deploy bot", "scopes": ["inference"]}),
    ApiCall("rename key", "patch", "/api/v1/keys/<str:key_id>/", Role.ADMIN, _key, {"name": "renamed"}),
    ApiCall("revoke key", "delete", "/api/v1/keys/<str:key_id>/", Role.ADMIN, _key),
    ApiCall("rotate key", "post", "/api/v1/keys/<str:key_id>/rotate/", Role.ADMIN, _key),
    ApiCall(
        "create deployment",
        "post",
        "/api/v1/deployments/",
        Role.MEMBER,
        _clusters,
        {"name": "embedder", "model": "tiny-embedding", "gpu_type": "CPU", "allowed_regions": ["us-east", "eu-west"], "max_replicas": 2},
    ),
    ApiCall("update deployment", "patch", "/api/v1/deployments/<str:deployment_id>/", Role.MEMBER, _deployment, {"max_replicas": 2}),
    ApiCall("delete deployment", "delete", "/api/v1/deployments/<str:deployment_id>/", Role.MEMBER, _deployment),
    ApiCall(
        "promote revision",
        "post",
        "/api/v1/deployments/<str:deployment_id>/promote/",
        Role.MEMBER,
        _deployment_with_two_revisions,
        {"revision": 1},
    ),
    ApiCall("roll back", "post", "/api/v1/deployments/<str:deployment_id>/rollback/", Role.MEMBER, _deployment_with_two_revisions),
    ApiCall(
        "start canary",
        "post",
        "/api/v1/deployments/<str:deployment_id>/canary/",
        Role.MEMBER,
        _deployment,
        {"changes": {"allowed_regions": ["eu-west"]}, "traffic_percent": 20},
    ),
    ApiCall("create staging", "post", "/api/v1/deployments/<str:deployment_id>/staging/", Role.MEMBER, _production, {}),
    ApiCall(
        "promote to production",
        "post",
        "/api/v1/deployments/<str:deployment_id>/promote-to-production/",
        Role.MEMBER,
        _staging_with_a_change,
        {},
    ),
    ApiCall("promote canary", "post", "/api/v1/deployments/<str:deployment_id>/canary/promote/", Role.MEMBER, _deployment_with_canary),
    ApiCall("hold canary", "post", "/api/v1/deployments/<str:deployment_id>/canary/hold/", Role.MEMBER, _deployment_with_canary),
    ApiCall("resume canary", "post", "/api/v1/deployments/<str:deployment_id>/canary/resume/", Role.MEMBER, _deployment_with_held_canary),
    ApiCall("roll back canary", "post", "/api/v1/deployments/<str:deployment_id>/canary/rollback/", Role.MEMBER, _deployment_with_canary),
    ApiCall(
        "start model upload",
        "post",
        "/api/v1/models/uploads/",
        Role.MEMBER,
        _nothing,
        {"name": "mine", "files": _declared(small_model_files())},
    ),
    # An empty chunk changes nothing and answers the file's progress.
    ApiCall(
        "send model file chunk",
        "put",
        "/api/v1/models/uploads/<str:upload_id>/files/<path:file_path>",
        Role.MEMBER,
        _upload,
        query="?offset=0",
    ),
    ApiCall("complete model upload", "post", "/api/v1/models/uploads/<str:upload_id>/complete/", Role.MEMBER, _sent_upload),
    ApiCall(
        "register model from hub",
        "post",
        "/api/v1/models/",
        Role.MEMBER,
        _nothing,
        {"name": "hub-model", "repo_id": "acme/tiny-chat", "revision": "main", "task": "chat"},
    ),
    ApiCall("delete model", "delete", "/api/v1/models/<str:model_id>/", Role.MEMBER, _registered_model),
    ApiCall(
        "create route",
        "post",
        "/api/v1/routes/",
        Role.MEMBER,
        _deployment,
        {"name": "chat-default", "strategy": "ordered", "targets": [{"deployment": "{deployment_id}"}]},
    ),
    ApiCall(
        "replace route",
        "put",
        "/api/v1/routes/<str:route_id>/",
        Role.MEMBER,
        _route,
        {"name": "chat-renamed", "strategy": "lowest_cost", "targets": [{"provider": "{provider_id}", "provider_model": "m"}]},
    ),
    ApiCall("delete route", "delete", "/api/v1/routes/<str:route_id>/", Role.MEMBER, _route),
    ApiCall(
        "create provider",
        "post",
        "/api/v1/providers/",
        Role.ADMIN,
        _nothing,
        {
            "name": "acme-llm",
            "base_url": "https://llm.example.test/v1",
            "region": "us-east",
            "api_key": "sk-secret-1234",
            "input_price_per_mtok": "0.25",
            "output_price_per_mtok": "1.25",
        },
    ),
    ApiCall("update provider", "patch", "/api/v1/providers/<str:provider_id>/", Role.ADMIN, _provider, {"input_price_per_mtok": "0.3"}),
    ApiCall("delete provider", "delete", "/api/v1/providers/<str:provider_id>/", Role.ADMIN, _unused_provider),
    ApiCall("set budget", "put", "/api/v1/billing/budget/", Role.ADMIN, _nothing, {"monthly_budget": "50.00", "alert_webhook_url": ""}),
    ApiCall(
        "payment method checkout",
        "post",
        "/api/v1/billing/checkout/",
        Role.ADMIN,
        _nothing,
        {"return_url": "https://console.example/"},
        allowed=(201, 409),
    ),
    ApiCall(
        "payment portal",
        "post",
        "/api/v1/billing/portal/",
        Role.ADMIN,
        _nothing,
        {"return_url": "https://console.example/"},
        allowed=(201, 409),
    ),
    ApiCall(
        "prepaid credit checkout",
        "post",
        "/api/v1/billing/credit/checkout/",
        Role.ADMIN,
        _nothing,
        {"amount": "25.00", "return_url": "https://console.example/"},
        allowed=(201, 409),
    ),
]


@dataclass(frozen=True)
class StaffCall:
    """A mutating admin API call (`/api/v1/admin/`): staff only, 404 for everyone else,
    whatever their role (tests/test_admin_console.py)."""

    name: str
    method: str
    route: str
    body: dict[str, Any] | None = None

    def url(self, params: dict[str, str]) -> str:
        path = self.route
        for name, value in params.items():
            path = path.replace(f"<str:{name}>", value).replace(f"<path:{name}>", value)
        return path


STAFF_CALLS = [
    StaffCall("change quota", "patch", "/api/v1/admin/tenants/<str:org_id>/quota/", {"requests_per_minute": 5}),
    StaffCall("suspend tenant", "post", "/api/v1/admin/tenants/<str:org_id>/status/", {"status": "suspended", "reason": "abuse report 42"}),
    StaffCall(
        "add cluster",
        "post",
        "/api/v1/admin/clusters/",
        {
            "name": "aws-us-west-2a",
            "provider": "aws",
            "region": "us-west",
            "agent_url": "http://10.0.0.5:9101",
            "inventory": [{"gpu_type": "T4", "count": 4}],
        },
    ),
    StaffCall("cordon cluster", "post", "/api/v1/admin/clusters/<str:cluster_name>/cordon/", {"reason": "maintenance"}),
    StaffCall("drain cluster", "post", "/api/v1/admin/clusters/<str:cluster_name>/drain/", {"reason": "maintenance"}),
    StaffCall("mark cluster down", "post", "/api/v1/admin/clusters/<str:cluster_name>/down/", {"reason": "outage"}),
    StaffCall("mark cluster up", "post", "/api/v1/admin/clusters/<str:cluster_name>/up/", {"reason": "recovered"}),
]
