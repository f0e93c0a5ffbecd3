"""Tenant scoping that fails closed.

Every tenant-owned model uses `TenantManager`. Its querysets refuse to run until they are
narrowed to one organization (`Model.objects.for_org(org)`, a filter on `organization`, or
a related manager such as `org.api_keys`). The only way round it is the loudly named
`unscoped_across_tenants()`, for staff pages and for lookups that are by nature global
(an API key by its prefix, a user's own memberships).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from django.db import models

if TYPE_CHECKING:
    from tenancy.models import Organization

# Lookups that pin a queryset to exactly one organization. `organization__in` is
# deliberately absent: it spans tenants.
_SCOPING_LOOKUPS = frozenset(
    {"organization", "organization_id", "organization__id", "organization__pk", "organization__exact", "organization__slug"}
)


class UnscopedQueryError(RuntimeError):
    """A tenant-owned queryset was evaluated without being scoped to an organization."""


class TenantQuerySet(models.QuerySet):
    _tenant_scoped: bool = False

    def for_org(self, organization: Organization) -> Self:
        if organization is None or not getattr(organization, "pk", None):
            raise UnscopedQueryError(f"{self.model.__name__}.for_org() needs a saved organization, got {organization!r}.")
        return self.filter(organization=organization)

    def unscoped_across_tenants(self) -> Self:
        clone = self._chain()  # type: ignore[attr-defined]  # absent from the stubs
        clone._tenant_scoped = True
        return clone

    def filter(self, *args: Any, **kwargs: Any) -> Self:
        clone = super().filter(*args, **kwargs)
        if _SCOPING_LOOKUPS.intersection(kwargs):
            value = next(kwargs[key] for key in kwargs if key in _SCOPING_LOOKUPS)
            if value is None:
                raise UnscopedQueryError(f"{self.model.__name__} filtered on organization=None.")
            clone._tenant_scoped = True
        return clone

    def _clone(self) -> Self:
        # Carries the flag through every copy Django makes; _clone is absent from the stubs.
        clone = super()._clone()  # type: ignore[misc]
        clone._tenant_scoped = self._tenant_scoped
        return clone

    def _require_scope(self) -> None:
        if not self._tenant_scoped:
            raise UnscopedQueryError(
                f"{self.model.__name__} query without an organization; use .for_org(org) "
                "(or .unscoped_across_tenants() where crossing tenants is intended)."
            )

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            self._require_scope()
        super()._fetch_all()

    def iterator(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._require_scope()
        return super().iterator(*args, **kwargs)

    def count(self) -> int:
        if self._result_cache is None:
            self._require_scope()
        return super().count()

    def exists(self) -> bool:
        if self._result_cache is None:
            self._require_scope()
        return super().exists()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._require_scope()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        self._require_scope()
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._require_scope()
        return super().delete()


class TenantManager(models.Manager.from_queryset(TenantQuerySet)):  # type: ignore[misc]
    pass
