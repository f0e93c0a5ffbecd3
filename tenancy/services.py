"""Business logic of tenancy: organizations, members, invitations and API keys.

Each mutating function takes the acting `OrgContext`, enforces the rules that depend on
the objects involved (the caller has already checked the role an endpoint needs) and
writes exactly one audit entry in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from tenancy import audit, keys
from tenancy.context import OrgContext
from tenancy.errors import Conflict, NotAllowed, ServiceError
from tenancy.ids import random_token
from tenancy.models import ApiKey, Invitation, Membership, Organization, Role, User
from tenancy.text import clean_name

INVITATION_LIFETIME = timedelta(days=7)
MAX_SCOPES = {choice.value for choice in ApiKey.Scope}


# --- snapshots for the audit log (never secrets) --------------------------------------------


def organization_snapshot(org: Organization) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "slug": org.slug}


def membership_snapshot(membership: Membership) -> dict[str, Any]:
    return {"id": membership.id, "user": membership.user.email, "role": membership.role}


def invitation_snapshot(invitation: Invitation) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "email": invitation.email,
        "role": invitation.role,
        "expires_at": invitation.expires_at.isoformat(),
        "revoked": invitation.revoked_at is not None,
    }


def api_key_snapshot(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": f"sbk_{key.prefix}",
        "scopes": list(key.scopes),
        "allowed_models": list(key.allowed_models),
        "monthly_budget": str(key.monthly_budget) if key.monthly_budget is not None else None,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked": key.revoked_at is not None,
    }


# --- organizations --------------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:40] or "org"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = f"{base}-{random_token(5).lower()}"
    return slug


@transaction.atomic
def create_organization(user: User, name: str, *, ip_address: str | None = None, request_id: str = "") -> Organization:
    name = clean_name(name, field="name", what="the organization a name", max_length=100)
    org = Organization.objects.create(name=name, slug=_unique_slug(name))
    Membership.objects.create(organization=org, user=user, role=Role.OWNER)
    ctx = OrgContext(organization=org, role=Role.OWNER, user=user, ip_address=ip_address, request_id=request_id)
    audit.record(ctx, "organization.created", target_type="organization", target_id=org.id, after=organization_snapshot(org))
    return org


@transaction.atomic
def rename_organization(ctx: OrgContext, name: str) -> Organization:
    org = ctx.organization
    name = clean_name(name, field="name", what="the organization a name", max_length=100)
    before = organization_snapshot(org)
    org.name = name
    org.save(update_fields=["name"])
    audit.record(ctx, "organization.renamed", target_type="organization", target_id=org.id, before=before, after=organization_snapshot(org))
    return org


@transaction.atomic
def delete_organization(ctx: OrgContext) -> None:
    # The audit log is the organization's own and goes with it; this is the one change
    # that cannot be recorded there, so the platform log keeps it.
    ctx.require_role(Role.OWNER, "delete the organization")
    logging.getLogger("switchboard.audit").warning(
        "organization %s (%s) deleted by %s", ctx.organization.id, ctx.organization.name, ctx.actor_label
    )
    ctx.organization.delete()


# --- members and invitations ----------------------------------------------------------------


def _owner_count(org: Organization) -> int:
    # Locked, so two owners demoting each other at once cannot leave the organization without one.
    return len(Membership.objects.for_org(org).filter(role=Role.OWNER).select_for_update())


def _check_can_manage(ctx: OrgContext, target_role: str, new_role: str | None = None) -> None:
    touches_owner = target_role == Role.OWNER or new_role == Role.OWNER
    if touches_owner and ctx.role != Role.OWNER:
        raise NotAllowed("Only an owner can grant, change or remove the owner role.")


@transaction.atomic
def change_member_role(ctx: OrgContext, membership: Membership, role: str) -> Membership:
    role = Role(role)
    _check_can_manage(ctx, membership.role, role)
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(ctx.organization) == 1:
        raise Conflict("This is the organization's last owner; make someone else an owner first.", field="role")
    before = membership_snapshot(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    audit.record(
        ctx, "member.role_changed", target_type="membership", target_id=membership.id, before=before, after=membership_snapshot(membership)
    )
    return membership


@transaction.atomic
def remove_member(ctx: OrgContext, membership: Membership) -> None:
    _check_can_manage(ctx, membership.role)
    if membership.role == Role.OWNER and _owner_count(ctx.organization) == 1:
        raise Conflict("This is the organization's last owner; make someone else an owner first.")
    before = membership_snapshot(membership)
    membership.delete()
    audit.record(ctx, "member.removed", target_type="membership", target_id=before["id"], before=before)


def _invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_url(token: str) -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse("accept-invitation", kwargs={"token": token})


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    url: str


@transaction.atomic
def create_invitation(ctx: OrgContext, *, role: str, email: str = "") -> IssuedInvitation:
    role = Role(role)
    _check_can_manage(ctx, role)
    email = email.strip().lower()
    if email and Membership.objects.for_org(ctx.organization).filter(user__email=email).exists():
        raise Conflict(f"{email} is already a member.", field="email")
    token = random_token(40)
    invitation = Invitation.objects.create(
        organization=ctx.organization,
        email=email,
        role=role,
        token_hash=_invitation_token_hash(token),
        invited_by=ctx.user,
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )
    url = invitation_url(token)
    audit.record(ctx, "invitation.created", target_type="invitation", target_id=invitation.id, after=invitation_snapshot(invitation))
    if email:
        org_name = ctx.organization.name
        transaction.on_commit(
            lambda: send_mail(
                subject=f"You are invited to {org_name} on Switchboard",
                message=(
                    f"{ctx.actor_label} invited you to join {org_name} as {role.label.lower()}.\n\n"
                    f"Accept: {url}\n\nThe link works once and expires in 7 days."
                ),
                from_email=None,
                recipient_list=[email],
            )
        )
    return IssuedInvitation(invitation=invitation, url=url)


@transaction.atomic
def revoke_invitation(ctx: OrgContext, invitation: Invitation) -> Invitation:
    if invitation.revoked_at is not None or invitation.accepted_at is not None:
        raise Conflict("This invitation is no longer pending.")
    before = invitation_snapshot(invitation)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit.record(
        ctx, "invitation.revoked", target_type="invitation", target_id=invitation.id, before=before, after=invitation_snapshot(invitation)
    )
    return invitation


def find_pending_invitation(token: str) -> Invitation | None:
    invitation = (
        Invitation.objects.unscoped_across_tenants().select_related("organization").filter(token_hash=_invitation_token_hash(token)).first()
    )
    return invitation if invitation is not None and invitation.is_pending else None


@transaction.atomic
def accept_invitation(user: User, token: str, *, ip_address: str | None = None, request_id: str = "") -> Membership:
    invitation = find_pending_invitation(token)
    if invitation is None:
        raise ServiceError("This invitation link is invalid, expired, revoked or already used.")
    if invitation.email and invitation.email != user.email.lower():
        raise NotAllowed(f"This invitation is for {invitation.email}; sign in with that address to accept it.")
    org = invitation.organization
    if Membership.objects.for_org(org).filter(user=user).exists():
        raise Conflict(f"You are already a member of {org.name}.")
    # Claim the invitation with a conditional update, so two people using the same link
    # at once cannot both join.
    claimed = (
        Invitation.objects.for_org(org)
        .filter(pk=invitation.pk, accepted_at=None, revoked_at=None)
        .update(accepted_at=timezone.now(), accepted_by=user)
    )
    if claimed != 1:
        raise ServiceError("This invitation link is invalid, expired, revoked or already used.")
    membership = Membership.objects.create(organization=org, user=user, role=invitation.role)
    ctx = OrgContext(organization=org, role=Role(invitation.role), user=user, ip_address=ip_address, request_id=request_id)
    audit.record(ctx, "member.joined", target_type="membership", target_id=membership.id, after=membership_snapshot(membership))
    return membership


# --- API keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown once, never stored


def _validated_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - MAX_SCOPES)
    if unknown:
        raise ServiceError(f"Unknown scope(s): {', '.join(unknown)}. Use inference, read and/or write.", field="scopes")
    if not scopes:
        raise ServiceError("Pick at least one scope: inference, read or write.", field="scopes")
    return sorted(set(scopes))


def _new_key_row(
    ctx: OrgContext, *, name: str, scopes: list[str], expires_at: datetime | None, rotated_from: ApiKey | None = None
) -> IssuedKey:
    for _ in range(3):
        material = keys.generate_key()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    organization=ctx.organization,
                    name=name,
                    prefix=material.prefix,
                    secret_hash=material.secret_hash,
                    scopes=scopes,
                    created_by=ctx.user,
                    expires_at=expires_at,
                    rotated_from=rotated_from,
                )
            return IssuedKey(api_key=key, plaintext=material.plaintext)
        except IntegrityError:  # a prefix collision: 62^12 makes this vanishingly rare
            continue
    raise RuntimeError("could not allocate a unique API key prefix")


MAX_ALLOWED_MODELS = 50


def _validated_models(models: list[str] | None) -> list[str]:
    names = [clean_name(name, field="allowed_models", what="each allowed model a name", max_length=100) for name in models or []]
    if len(names) > MAX_ALLOWED_MODELS:
        message = f"A key may list at most {MAX_ALLOWED_MODELS} models; leave the list empty to allow every one."
        raise ServiceError(message, field="allowed_models")
    return sorted(set(names))


@transaction.atomic
def _validated_budget(budget: Decimal | None) -> Decimal | None:
    if budget is not None and (budget <= 0 or budget >= Decimal("1e12")):
        raise ServiceError("A key's monthly budget must be more than $0; leave it empty for none.", field="monthly_budget")
    return budget


def create_api_key(
    ctx: OrgContext,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    monthly_budget: Decimal | None = None,
) -> IssuedKey:
    name = clean_name(name, field="name", what="the key a name", max_length=100)
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    models = _validated_models(allowed_models)
    budget = _validated_budget(monthly_budget)
    issued = _new_key_row(ctx, name=name, scopes=_validated_scopes(scopes), expires_at=expires_at)
    if models or budget is not None:
        issued.api_key.allowed_models, issued.api_key.monthly_budget = models, budget
        issued.api_key.save(update_fields=["allowed_models", "monthly_budget"])
    audit.record(ctx, "api_key.created", target_type="api_key", target_id=issued.api_key.id, after=api_key_snapshot(issued.api_key))
    return issued


@transaction.atomic
def rename_api_key(ctx: OrgContext, key: ApiKey, name: str) -> ApiKey:
    name = clean_name(name, field="name", what="the key a name", max_length=100)
    before = api_key_snapshot(key)
    key.name = name
    key.save(update_fields=["name"])
    audit.record(ctx, "api_key.renamed", target_type="api_key", target_id=key.id, before=before, after=api_key_snapshot(key))
    return key


@transaction.atomic
def set_key_budget(ctx: OrgContext, key: ApiKey, monthly_budget: Decimal | None) -> ApiKey:
    """The key's hard monthly limit on per-token charges; gateways apply it within a few
    seconds (their snapshot refresh)."""
    before = api_key_snapshot(key)
    key.monthly_budget = _validated_budget(monthly_budget)
    key.save(update_fields=["monthly_budget"])
    audit.record(ctx, "api_key.budget_changed", target_type="api_key", target_id=key.id, before=before, after=api_key_snapshot(key))
    return key


@transaction.atomic
def set_allowed_models(ctx: OrgContext, key: ApiKey, models: list[str]) -> ApiKey:
    """Which routes or deployments the key may call (empty: every one); gateways apply it
    within their key cache time."""
    before = api_key_snapshot(key)
    key.allowed_models = _validated_models(models)
    key.save(update_fields=["allowed_models"])
    audit.record(ctx, "api_key.models_changed", target_type="api_key", target_id=key.id, before=before, after=api_key_snapshot(key))
    return key


@transaction.atomic
def revoke_api_key(ctx: OrgContext, key: ApiKey) -> ApiKey:
    if key.revoked_at is not None:
        raise Conflict("This key is already revoked.")
    before = api_key_snapshot(key)
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit.record(ctx, "api_key.revoked", target_type="api_key", target_id=key.id, before=before, after=api_key_snapshot(key))
    return key


@transaction.atomic
def rotate_api_key(ctx: OrgContext, key: ApiKey, *, grace: timedelta | None = None) -> IssuedKey:
    """Issue a replacement with the same name, scopes, expiry, allowed models and budget
    (whose month's spend it shares with the key it replaces: rotating never resets a
    budget); the old key keeps working for the grace period so clients can switch
    without an outage."""
    key = ApiKey.objects.for_org(ctx.organization).select_for_update().get(pk=key.pk)  # two rotations at once: one waits, then sees 409
    if key.status != "active":
        raise Conflict(f"Only an active key can be rotated; this one is {key.status}.")
    if hasattr(key, "rotated_to"):
        raise Conflict("This key was already rotated; rotate its replacement instead.")
    grace = grace if grace is not None else timedelta(hours=settings.API_KEY_ROTATION_GRACE_HOURS)
    before = api_key_snapshot(key)
    issued = _new_key_row(ctx, name=key.name, scopes=list(key.scopes), expires_at=key.expires_at, rotated_from=key)
    issued.api_key.allowed_models, issued.api_key.monthly_budget = list(key.allowed_models), key.monthly_budget
    issued.api_key.save(update_fields=["allowed_models", "monthly_budget"])
    grace_end = timezone.now() + grace
    key.expires_at = min(key.expires_at, grace_end) if key.expires_at else grace_end
    key.save(update_fields=["expires_at"])
    audit.record(
        ctx,
        "api_key.rotated",
        target_type="api_key",
        target_id=key.id,
        before=before,
        after={"old_key": api_key_snapshot(key), "new_key": api_key_snapshot(issued.api_key)},
    )
    return issued
