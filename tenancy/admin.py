"""Django admin for platform staff. Tenant-owned models are listed across tenants here,
on purpose, through the loudly named bypass."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from tenancy.models import ApiKey, AuditEntry, Invitation, Membership, Organization, User


class CrossTenantAdmin(admin.ModelAdmin):
    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return self.model.objects.unscoped_across_tenants()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # type: ignore[no-untyped-def]
        related = db_field.remote_field.model._default_manager
        if hasattr(related, "unscoped_across_tenants"):
            kwargs["queryset"] = related.unscoped_across_tenants()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Platform", {"fields": ("is_active", "is_staff", "is_superuser")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "id", "created_at"]
    search_fields = ["name", "slug", "id"]


@admin.register(Membership)
class MembershipAdmin(CrossTenantAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]


@admin.register(ApiKey)
class ApiKeyAdmin(CrossTenantAdmin):
    list_display = ["name", "organization", "prefix", "created_at", "expires_at", "revoked_at"]
    exclude = ["secret_hash"]
    readonly_fields = ["prefix", "organization", "created_by", "rotated_from", "last_used_at"]


@admin.register(Invitation)
class InvitationAdmin(CrossTenantAdmin):
    list_display = ["organization", "email", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    exclude = ["token_hash"]


@admin.register(AuditEntry)
class AuditEntryAdmin(CrossTenantAdmin):
    list_display = ["created_at", "organization", "actor_label", "action", "target_type", "target_id"]
    list_filter = ["action"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
