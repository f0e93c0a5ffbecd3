from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tenancy.models import ApiKey, AuditEntry, Invitation, Membership, Organization, Role


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The caller's role in this organization.")

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "created_at", "role"]
        read_only_fields = ["id", "slug", "created_at", "role"]

    def get_role(self, org: Organization) -> str:
        return str(self.context["ctx"].role)


class OrganizationUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "full_name", "role", "created_at"]
        read_only_fields = fields


class MemberUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="Only this address may accept; empty for a shareable link.")
    status = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "created_at", "expires_at", "status"]
        read_only_fields = fields

    def get_status(self, invitation: Invitation) -> str:
        if invitation.revoked_at:
            return "revoked"
        if invitation.accepted_at:
            return "accepted"
        return "pending" if invitation.is_pending else "expired"


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(
        required=False, allow_blank=True, default="", help_text="Only this address may accept; leave empty for a shareable link."
    )
    role = serializers.ChoiceField(choices=Role.choices)


class IssuedInvitationSerializer(InvitationSerializer):
    url = serializers.SerializerMethodField(help_text="The acceptance link. Shown only in this response.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "url"]
        read_only_fields = fields

    def get_url(self, invitation: Invitation) -> str:
        return self.context["url"]


class ApiKeySerializer(serializers.ModelSerializer):
    prefix = serializers.SerializerMethodField(help_text="The public start of the key, for recognising it.")
    # Not required in the schema: only roles that see money get it (an output-only
    # serializer, so "not read-only" changes nothing but that).
    monthly_budget = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False, allow_null=True, help_text="Only for admins, owners and keys that may write."
    )
    status = serializers.CharField(read_only=True)
    rotated_from = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "allowed_models",
            "monthly_budget",
            "status",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "rotated_from",
        ]
        read_only_fields = [name for name in fields if name != "monthly_budget"]

    def get_prefix(self, key: ApiKey) -> str:
        return f"sbk_{key.prefix}"

    def to_representation(self, instance: ApiKey) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        ctx = self.context.get("ctx")
        if ctx is None or not ctx.role.sees_money:
            data.pop("monthly_budget", None)  # money, for the roles that may see it
        return data


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKey.Scope.choices), min_length=1, max_length=3)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), max_length=50, default=list, help_text="Routes it may call; empty: every one."
    )
    monthly_budget = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False, allow_null=True, default=None, help_text="USD of per-token charges a month."
    )


class ApiKeyUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), max_length=50, required=False, help_text="Routes it may call; empty: every one."
    )
    monthly_budget = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False, allow_null=True, help_text="USD of per-token charges a month; null: none."
    )


class IssuedApiKeySerializer(ApiKeySerializer):
    key = serializers.SerializerMethodField(help_text="The secret. Shown only in this response; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, key: ApiKey) -> str:
        return self.context["plaintext"]


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label", read_only=True)
    actor_user = serializers.SerializerMethodField()
    actor_key = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_user",
            "actor_key",
            "action",
            "target_type",
            "target_id",
            "before",
            "after",
            "ip_address",
            "request_id",
        ]
        read_only_fields = fields

    def get_actor_user(self, entry: AuditEntry) -> str | None:
        return entry.actor_user.email if entry.actor_user is not None else None


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
