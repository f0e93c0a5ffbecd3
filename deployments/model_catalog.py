"""The deployable-model catalog in the database, and which entries an organization sees."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from deployments.models import CatalogModel
from modelserver.catalog import CATALOG
from tenancy.models import Organization


def ensure_builtin_models(catalog_model: Any = None) -> None:
    """Mirrors the model server's built-in catalog into the table (idempotent)."""
    table = catalog_model or CatalogModel
    # A migration passes its historical model, which may predate some fields.
    known = {field.name for field in table._meta.get_fields()}
    for spec in CATALOG.values():
        table.objects.update_or_create(
            organization=None,
            name=spec.name,
            defaults={
                field: value
                for field, value in {
                    "task": spec.task.value,
                    "source_kind": "package",
                    "source": spec.source,
                    "weights_format": spec.weights_format,
                    "context_length": spec.max_context,
                    "embedding_dimensions": spec.embedding_dimensions,
                    "runtime": CatalogModel.Runtime.BUILTIN,
                    "memory_gb": spec.memory_gb,
                    "license": spec.license,
                    "description": spec.description,
                }.items()
                if field in known
            },
        )


def visible_to(org: Organization) -> QuerySet[CatalogModel]:
    """Built-in models and the organization's own; never another tenant's."""
    return CatalogModel.objects.filter(Q(organization=None) | Q(organization=org))
