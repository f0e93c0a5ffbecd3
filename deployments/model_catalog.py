"""The deployable-model catalog in the database, and which entries an organization sees."""

from __future__ import annotations

from typing import Any

from django.db.models import F, Q, QuerySet

from deployments.models import CatalogModel
from modelserver.catalog import CATALOG
from tenancy.models import Organization


def ensure_builtin_models(catalog_model: Any = None) -> None:
    """Mirrors the model server's built-in catalog into the table (idempotent)."""
    table = catalog_model or CatalogModel
    # A migration passes its historical model, which may predate some fields.
    known = {field.name for field in table._meta.get_fields()}
    for spec in CATALOG.values():
        mirrored = {
            "task": spec.task.value,
            "source_kind": "package",
            "source": spec.source,
            "weights_format": spec.weights_format,
            "context_length": spec.max_context,
            "embedding_dimensions": spec.embedding_dimensions,
            "license": spec.license,
            "description": spec.description,
        }
        # How it is served (runtime, memory) is staff's to change: set once, never reset.
        served = {"runtime": CatalogModel.Runtime.BUILTIN, "memory_gb": spec.memory_gb}
        table.objects.update_or_create(
            organization=None,
            name=spec.name,
            defaults={field: value for field, value in mirrored.items() if field in known},
            create_defaults={field: value for field, value in {**mirrored, **served}.items() if field in known},
        )


def entry(org: Organization, name: str) -> CatalogModel | None:
    """The catalog entry a deployment of `name` runs: the organization's own, else the
    built-in one (the same order on every database)."""
    return visible_to(org).filter(name=name).order_by(F("organization_id").asc(nulls_last=True)).first()


def visible_to(org: Organization) -> QuerySet[CatalogModel]:
    """Built-in models and the organization's own; never another tenant's."""
    return CatalogModel.objects.filter(Q(organization=None) | Q(organization=org))


def offered_to(org: Organization, *, staff: bool) -> QuerySet[CatalogModel]:
    """What the deploy form and the model list show: `visible_to`, less the randomly
    initialised test models unless the viewer is platform staff. The deploy path still
    accepts a test model by name (tests and scripts deploy them)."""
    models = visible_to(org)
    if not staff:
        models = models.exclude(weights_format=CatalogModel.WeightsFormat.RANDOM)
    return models.order_by(F("organization_id").asc(nulls_first=True), "name")
