"""Tenancy: users, organizations, memberships and roles, invitations, API keys, audit log."""

from __future__ import annotations

from typing import ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone

from tenancy.ids import public_id_field
from tenancy.scoping import TenantManager


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **fields: object) -> User:
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **fields: object) -> User:
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


class User(AbstractUser):
    """A person. Signs in with email; `is_staff` marks platform staff (the Admin pages)."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)
    full_name = models.CharField(max_length=150, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []
    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]  # by email, not username

    def __str__(self) -> str:
        return self.email


class OrgStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    SUSPENDED = "suspended", "Suspended"


class Organization(models.Model):
    """The tenant. Everything a customer owns hangs off one of these."""

    id = public_id_field("org")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Billing standing. The gateway refuses a suspended organization with 403 and this
    # reason; the billing issue moves organizations between these states.
    status = models.CharField(max_length=10, choices=OrgStatus.choices, default=OrgStatus.ACTIVE)
    status_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"
    OWNER = "owner", "Owner"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= Role(other).rank

    @property
    def sees_money(self) -> bool:
        """Costs, prices, charges and invoices: admins and owners (and keys that may write),
        on every page, API answer and export alike."""
        return self.at_least(Role.ADMIN)


_ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Membership(models.Model):
    id = public_id_field("mem")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_user_and_org")]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization_id} as {self.role}"


class Invitation(models.Model):
    """A single-use link that makes its holder a member. If `email` is set, only that
    address may accept it."""

    id = public_id_field("inv")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(blank=True)
    role = models.CharField(max_length=10, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "id"]

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class ApiKey(models.Model):
    """A developer credential. Only an HMAC of the secret is stored; `prefix` is the
    public, indexed part shown in the console and used to find the row."""

    class Scope(models.TextChoices):
        INFERENCE = "inference", "Inference (/v1)"
        READ = "read", "Read (management API)"
        WRITE = "write", "Write (management API)"

    id = public_id_field("key")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=24, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    # Route or deployment names this key may call through /v1; empty: every one.
    allowed_models = models.JSONField(default=list, blank=True)
    # A hard monthly limit on this key's per-token charges (the gateway answers 402 past
    # it, across all gateway processes); empty: only the organization's limits apply.
    monthly_budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rotated_from = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotated_to")

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> str:
        now = timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class AuditEntry(models.Model):
    """One change: who (a user or an API key), what, when, and the object before and after."""

    id = public_id_field("aud")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="audit_entries")
    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text too, so the entry still says who acted after the user or key is gone.
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=40)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="audit_org_recent")]


class StaffAuditEntry(models.Model):
    """A change made by platform staff in the Admin console: clusters, the platform price
    book, and every change to a tenant (which the tenant's own audit log records too, with
    the staff user as actor). Platform-wide, so not scoped to an organization; kept when
    the organization it names is deleted."""

    id = public_id_field("sau")
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    organization_name = models.CharField(max_length=100, blank=True, help_text="Kept as text, for after the organization is gone.")
    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=100)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
