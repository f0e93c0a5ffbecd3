"""Rating: metered usage priced with the price book, into invoice lines.

What is charged, per usage source:
- a request served by a dedicated deployment: nothing per token; its replicas' GPU-seconds
  (metering.gpu_time, cold start included) at the GPU type's price per hour from the book
  (deployments.prices: the organization's version, the platform's, or the list price);
- a request answered by a model the price book prices (ModelPrice, keyed on the model
  served, whatever the caller called it): its input and output tokens at that model's
  prices per million;
- any other request through an external provider: the provider's cost (on the usage
  event, exact) passed through with the markup (ProviderMarkup).

Each version of a price holds from its `effective_from` (a whole hour) until the next; an
organization's own versions (an enterprise deal) win over the platform's. Usage is read
from the hourly rollups, so every hour is priced at the version in force in it, exactly
as each of its events would be. Amounts are exact decimals until each invoice line, which
rounds half up to the cent: the only rounding (a GPU price per hour divided into seconds
is carried to 28 significant digits first, as it is not always a finite decimal).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf

from billing.models import InvoiceLine, ModelPrice, ProviderMarkup
from deployments.prices import GpuPriceBook, Versions
from metering.gpu_charges import gpu_charges
from metering.models import Breakdown, Granularity, UsageRollup
from tenancy.models import Organization

MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")


def round_to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


# ---------------------------------------------------------------------------------------
# The price book in force


def _for(org: Organization, rows: QuerySet[Any]) -> QuerySet[Any]:
    return rows.filter(Q(organization=org) | Q(organization__isnull=True))


@dataclass
class PriceBook:
    """Everything that prices one organization's usage, loaded once."""

    model_prices: dict[str, Versions]
    gpu_prices: GpuPriceBook
    markup: Versions

    @classmethod
    def load(cls, org: Organization) -> PriceBook:
        def chosen(rows: Iterable[Any], key: str) -> dict[str, Versions]:
            # The organization's own versions replace the platform's for that key.
            platform: dict[str, list[tuple[datetime, Any]]] = defaultdict(list)
            own: dict[str, list[tuple[datetime, Any]]] = defaultdict(list)
            for row in rows:
                (own if row.organization_id else platform)[getattr(row, key)].append((row.effective_from, row))
            return {name: Versions(own.get(name) or platform[name]) for name in {*platform, *own}}

        markups = list(_for(org, ProviderMarkup.objects.all()))
        own_markups = [(m.effective_from, m.percent) for m in markups if m.organization_id]
        return cls(
            model_prices=chosen(_for(org, ModelPrice.objects.all()), "model"),
            gpu_prices=GpuPriceBook.load(org.pk),
            markup=Versions(own_markups or [(m.effective_from, m.percent) for m in markups if not m.organization_id]),
        )


# ---------------------------------------------------------------------------------------
# Lines


@dataclass
class Line:
    kind: str
    description: str
    unit: str
    unit_price: Decimal
    quantity: Decimal = Decimal(0)
    exact_amount: Decimal = Decimal(0)
    key: tuple[object, ...] = ()  # what makes it one line: the same across any stretch of time

    @property
    def amount(self) -> Decimal:
        return round_to_cents(self.exact_amount)

    def add(self, quantity: Decimal, amount: Decimal) -> None:
        self.quantity += quantity
        self.exact_amount += amount


def _hourly_usage(
    org: Organization, start: datetime, end: datetime, key_ids: Sequence[str] | None = None, route: str | None = None
) -> Iterable[dict[str, Any]]:
    """Per hour and model served, split by whether a deployment served it: tokens and cost
    (of some API keys' requests, or of one route's, if given). Token prices are keyed on
    the model that answered, not the name the caller used, so a route's name changes no
    price; events recorded before the served model was kept fall back to the caller's."""
    rows = UsageRollup.objects.for_org(org).filter(granularity=Granularity.HOUR, breakdown=Breakdown.ALL, bucket__gte=start, bucket__lt=end)
    if key_ids is not None:
        rows = rows.filter(key_id__in=list(key_ids))
    if route is not None:
        rows = rows.filter(route=route)
    return (
        rows.annotate(dedicated=~Q(deployment_id=""), priced_model=Coalesce(NullIf("served_model", Value("")), "model"))
        .values("bucket", "priced_model", "dedicated")
        .annotate(input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost=Sum("cost"))
        .order_by("bucket", "priced_model")
    )


def rate(
    org: Organization,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    book: PriceBook | None = None,
    key_ids: Sequence[str] | None = None,
    route: str | None = None,
) -> list[Line]:
    """The lines for [start, end) (whole hours), in a stable order. For API keys, or a
    route: only their requests' per-token charges (GPU time belongs to deployments, not
    to keys or routes)."""
    book = book or PriceBook.load(org)
    lines: dict[tuple[object, ...], Line] = {}

    def line(key: tuple[object, ...], **spec: Any) -> Line:
        if key not in lines:
            lines[key] = Line(key=key, **spec)
        return lines[key]

    for row in _hourly_usage(org, start, end, key_ids, route):
        if row["dedicated"]:
            continue  # billed as GPU time
        hour, model = row["bucket"], row["priced_model"]
        versions = book.model_prices.get(model)
        price = versions.at(hour) if versions else None
        if price is not None:
            for direction, tokens, unit_price in (
                ("input", row["input_tokens"], price.input_price_per_mtok),
                ("output", row["output_tokens"], price.output_price_per_mtok),
            ):
                if tokens:
                    spec = {
                        "kind": InvoiceLine.Kind.TOKENS,
                        "description": f"{model}: {direction} tokens",
                        "unit": "1M tokens",
                        "unit_price": unit_price,
                    }
                    line(("tokens", model, direction, price.pk), **spec).add(Decimal(tokens) / MILLION, tokens * unit_price / MILLION)
            continue
        if row["cost"]:
            percent = book.markup.at(hour) or Decimal(0)
            multiplier = 1 + percent / 100
            spec = {
                "kind": InvoiceLine.Kind.PROVIDER,
                "description": f"{model}: external provider cost + {percent.normalize():f}%",
                "unit": "USD of provider cost",
                "unit_price": multiplier,
            }
            line(("provider", model, percent), **spec).add(row["cost"], row["cost"] * multiplier)

    if key_ids is None and route is None:
        _rate_gpu_time(org, start, end, now, book, line)
    order: list[str] = [InvoiceLine.Kind.TOKENS, InvoiceLine.Kind.PROVIDER, InvoiceLine.Kind.GPU]
    return sorted(lines.values(), key=lambda item: (order.index(item.kind), item.description))


def _rate_gpu_time(org: Organization, start: datetime, end: datetime, now: datetime | None, book: PriceBook, line: Any) -> None:
    for charge in gpu_charges(org, start, end, now=now, book=book.gpu_prices):
        spec = {
            "kind": InvoiceLine.Kind.GPU,
            "description": f"{charge.deployment_name}: {charge.gpu_type} GPU-hours",
            "unit": "GPU-hour",
            "unit_price": charge.rate.price_per_hour,
        }
        key = ("gpu", charge.deployment_id, charge.gpu_type, charge.rate.price_per_hour)
        line(key, **spec).add(charge.gpu_hours, charge.amount)


def subtotal(lines: Sequence[Line]) -> Decimal:
    return sum((line.amount for line in lines), Decimal(0))


def month_to_date(org: Organization, now: datetime | None = None, *, exact: bool = False, book: PriceBook | None = None) -> Decimal:
    """This month's charges so far, before credits: the sum of the rounded lines (or of
    their exact amounts)."""
    now = now or datetime.now(UTC)
    start = month_start(now)
    lines = rate(org, start, now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1), now=now, book=book)
    return sum((line.exact_amount for line in lines), Decimal(0)) if exact else subtotal(lines)


def keys_month_to_date(org: Organization, key_ids: Sequence[str], now: datetime, *, book: PriceBook | None = None) -> Decimal:
    """This month's exact per-token charges of these API keys' requests (a key and the
    keys it was rotated from share one budget)."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return sum((line.exact_amount for line in rate(org, month_start(now), end, now=now, book=book, key_ids=key_ids)), Decimal(0))


def route_month_to_date(org: Organization, route: str, now: datetime, *, book: PriceBook | None = None) -> Decimal:
    """This month's exact per-token charges of the requests made through a route's name
    (the usage events' `route`); requests a dedicated deployment served bill GPU time and
    count nothing here."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return sum((line.exact_amount for line in rate(org, month_start(now), end, now=now, book=book, route=route)), Decimal(0))


def to_micros(amount: Decimal) -> int:
    """Whole micro-dollars, rounded half up."""
    return int((amount * MILLION).quantize(Decimal(1), rounding=ROUND_HALF_UP))
