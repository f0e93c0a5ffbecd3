"""Every mutating management API call, with what it needs set up and the role it needs.
`test_the_table_covers_every_mutating_endpoint` keeps this list complete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from console.models import Organization, Role
from tests.factories import MembershipFactory, issue_invitation, issue_key


@dataclass(frozen=True)
class ApiCall:
    name: str
    method: str
    route: str  # as in the URL configuration
    needs: Role
    setup: Callable[[Organization], dict[str, str]]
    body: dict[str, Any] | None = None

    def url(self, params: dict[str, str]) -> str:
        path = self.route
        for name, value in params.items():
            path = path.replace(f"<str:{name}>", value)
        return path


def _nothing(org: Organization) -> dict[str, str]:
    return {}


def _member(org: Organization) -> dict[str, str]:
    return {"member_id": MembershipFactory(organization=org, role=Role.MEMBER).id}


def _invitation(org: Organization) -> dict[str, str]:
    return {"invitation_id": issue_invitation(org, email="someone@example.test").invitation.id}


def _key(org: Organization) -> dict[str, str]:
    return {"key_id": issue_key(org, ["read"], name="target").api_key.id}


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
]
