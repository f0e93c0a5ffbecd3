"""Who is acting, for which organization, with which role: resolved once per request."""

from __future__ import annotations

from dataclasses import dataclass

from tenancy.errors import NotAllowed
from tenancy.models import ApiKey, Organization, Role, User


@dataclass(frozen=True)
class OrgContext:
    organization: Organization
    role: Role
    user: User | None = None
    api_key: ApiKey | None = None
    ip_address: str | None = None
    request_id: str = ""

    @property
    def actor_label(self) -> str:
        if self.api_key is not None:
            return f"API key {self.api_key.name} (sbk_{self.api_key.prefix})"
        if self.user is not None:
            return self.user.email
        return "system"

    def require_role(self, needed: Role, action: str) -> None:
        if not self.role.at_least(needed):
            raise NotAllowed(f"Your role ({self.role.label.lower()}) cannot {action}; it needs {Role(needed).label.lower()} or above.")
