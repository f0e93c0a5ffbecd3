"""The GPU part of the price book: what one GPU of a type costs per hour on a dedicated
replica. One truth, read by everything that shows or uses a GPU price: the deploy
estimate, the deployment list and API, the gateway's cost ordering, the Usage page's
attribution, and the invoice (billing.rating bills it by the GPU-second).

In force at a moment, for an organization: its own version (an enterprise deal), else the
platform's version (staff set them, each from a whole hour), else the GPU type's list
price from the catalog (deployments/gpu_catalog.py, with its cited source). So a fresh
install bills at list prices, and a price change never re-prices an hour already past."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q

from deployments.models import GpuPrice, GpuType

SECONDS_PER_HOUR = Decimal(3600)


class Versions:
    """Versions of one price, each in force from its start until the next one's."""

    def __init__(self, versions: Iterable[tuple[datetime, Any]]) -> None:
        ordered = sorted(versions, key=lambda version: version[0])
        self.starts = [start for start, _ in ordered]
        self.values = [value for _, value in ordered]

    def at(self, moment: datetime) -> Any | None:
        index = bisect.bisect_right(self.starts, moment) - 1
        return self.values[index] if index >= 0 else None


@dataclass(frozen=True)
class GpuRate:
    gpu_type: str
    price_per_hour: Decimal
    source: str  # "list price" | "platform price" | "your price"

    def cost_of(self, gpu_seconds: Decimal) -> Decimal:
        return gpu_seconds * self.price_per_hour / SECONDS_PER_HOUR


class GpuPriceBook:
    """Every GPU price one organization pays (or the platform's, for no organization),
    loaded once."""

    def __init__(self, versions: dict[str, Versions], list_prices: dict[str, Decimal]) -> None:
        self.versions = versions
        self.list_prices = list_prices

    @classmethod
    def load(cls, organization_id: str | None) -> GpuPriceBook:
        rows = GpuPrice.objects.filter(
            Q(organization_id=organization_id) | Q(organization__isnull=True) if organization_id else Q(organization__isnull=True)
        )
        platform: dict[str, list[tuple[datetime, GpuRate]]] = defaultdict(list)
        own: dict[str, list[tuple[datetime, GpuRate]]] = defaultdict(list)
        for row in rows:
            source = "your price" if row.organization_id else "platform price"
            (own if row.organization_id else platform)[row.gpu_type_id].append(
                (row.effective_from, GpuRate(row.gpu_type_id, row.price_per_hour, source))
            )
        # The organization's own versions replace the platform's for that GPU type.
        versions = {code: Versions(own.get(code) or platform[code]) for code in {*platform, *own}}
        return cls(versions, dict(GpuType.objects.values_list("code", "default_price_per_hour")))

    def at(self, gpu_type: str, moment: datetime) -> GpuRate | None:
        """The price in force; None only for a GPU type the catalog does not know."""
        versions = self.versions.get(gpu_type)
        rate = versions.at(moment) if versions else None
        if rate is not None:
            return rate  # type: ignore[no-any-return]
        listed = self.list_prices.get(gpu_type)
        return GpuRate(gpu_type, listed, "list price") if listed is not None else None

    def changes(self) -> set[datetime]:
        """Every moment a price changes."""
        return {start for versions in self.versions.values() for start in versions.starts}


def price_per_hour(*, organization_id: str | None, gpu_type: str, at: datetime | None = None) -> Decimal:
    rate = GpuPriceBook.load(organization_id).at(gpu_type, at or datetime.now(UTC))
    if rate is None:
        raise GpuType.DoesNotExist(f"no GPU type {gpu_type!r}")
    return rate.price_per_hour
