"""What dedicated replicas' GPU time costs: the metered GPU-seconds (metering.gpu_time)
priced with the GPU price book (deployments.prices), one stretch per price version.

The invoice (billing.rating) and the Usage page both read this, so the GPU figure a
customer watches is the one they are billed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from deployments.prices import SECONDS_PER_HOUR, GpuPriceBook, GpuRate
from metering import gpu_time
from tenancy.models import Organization


@dataclass(frozen=True)
class GpuCharge:
    deployment_id: str
    deployment_name: str
    gpu_type: str
    rate: GpuRate
    gpu_seconds: Decimal

    @property
    def gpu_hours(self) -> Decimal:
        return self.gpu_seconds / SECONDS_PER_HOUR

    @property
    def amount(self) -> Decimal:
        return self.rate.cost_of(self.gpu_seconds)


def gpu_charges(
    org: Organization, start: datetime, end: datetime, *, now: datetime | None = None, book: GpuPriceBook | None = None
) -> Iterator[GpuCharge]:
    """Per deployment and GPU type, per stretch of [start, end) in which no price changes."""
    book = book or GpuPriceBook.load(org.pk)
    edges = sorted({start, end, *(moment for moment in book.changes() if start < moment < end)})
    for begin, finish in zip(edges, edges[1:], strict=False):
        if begin >= (now or datetime.now(UTC)):
            break
        for row in gpu_time.gpu_seconds(org, begin, finish, ("deployment_id", "gpu_type"), now=now):
            rate = book.at(row.gpu_type or "", begin)
            if rate is None:
                continue  # a GPU type the catalog does not know: never guessed
            yield GpuCharge(row.deployment_id or "", row.deployment_name or "", row.gpu_type or "", rate, row.gpu_seconds)


def gpu_total(org: Organization, start: datetime, end: datetime, *, now: datetime | None = None) -> tuple[Decimal, Decimal]:
    """GPU-hours and their exact charge over [start, end)."""
    charges = list(gpu_charges(org, start, end, now=now))
    return sum((c.gpu_hours for c in charges), Decimal(0)), sum((c.amount for c in charges), Decimal(0))
