"""The one place where a request becomes an `OrgContext`: which organization, which role.

Console pages name the organization in the URL (`/o/<org_slug>/...`); the management API
takes it from the API key, or, for the console's own session calls, from the
`X-Organization` header (a slug) or the organization last opened in the console.
A user who is not a member gets 404, exactly as if the organization did not exist.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest

from tenancy import selectors
from tenancy.context import OrgContext
from tenancy.models import ApiKey, Role, User

ACTIVE_ORG_SESSION_KEY = "active_org_slug"
ORG_HEADER = "HTTP_X_ORGANIZATION"


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def request_id(request: HttpRequest) -> str:
    return getattr(request, "request_id", "")


def context_for_member(request: HttpRequest, user: User, org_slug: str) -> OrgContext:
    membership = selectors.membership_in(user, org_slug) if user.is_authenticated else None
    if membership is None:
        raise Http404("No such organization.")
    return OrgContext(
        organization=membership.organization,
        role=Role(membership.role),
        user=user,
        ip_address=client_ip(request),
        request_id=request_id(request),
    )


def role_of_api_key(key: ApiKey) -> Role:
    # A key acts as an admin when it may write and as a viewer when it may only read. It
    # can never act as an owner: deleting the organization takes a person.
    if key.has_scope(ApiKey.Scope.WRITE):
        return Role.ADMIN
    return Role.VIEWER


def context_for_api_key(request: HttpRequest, key: ApiKey) -> OrgContext:
    return OrgContext(
        organization=key.organization,
        role=role_of_api_key(key),
        api_key=key,
        ip_address=client_ip(request),
        request_id=request_id(request),
    )


def context_for_session_api(request: HttpRequest, user: User) -> OrgContext:
    slug = request.META.get(ORG_HEADER) or request.session.get(ACTIVE_ORG_SESSION_KEY)
    if not slug:
        first = selectors.memberships_of(user).first()
        if first is None:
            raise Http404("You are not a member of any organization; create one first.")
        slug = first.organization.slug
    return context_for_member(request, user, slug)


def remember_active_org(request: HttpRequest, ctx: OrgContext) -> None:
    if request.session.get(ACTIVE_ORG_SESSION_KEY) != ctx.organization.slug:
        request.session[ACTIVE_ORG_SESSION_KEY] = ctx.organization.slug
