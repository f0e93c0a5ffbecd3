"""The request log: an organization's requests one by one, newest first, filtered on
every recorded field, for the console's Requests page and `GET /api/v1/requests/`, in the
spirit of OpenRouter's Activity and Logs. Read from the usage events (one per request the
gateway answered for a known key); pages are keyset-paginated on (arrival, request id), so
a page costs the same however deep it is."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet

from metering.models import Breakdown, Granularity, UsageEvent, UsageRollup
from tenancy.errors import ServiceError
from tenancy.models import Organization

PAGE_SIZE = 50
# The ranges a log is read over: the index is (organization, arrival).
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
STATUS_CLASSES = {"2xx": (200, 300), "4xx": (400, 500), "5xx": (500, 600), "errors": (400, 600)}


@dataclass(frozen=True)
class RequestFilters:
    since: str = "24h"
    key_id: str = ""
    model: str = ""  # the name the caller asked for
    route: str = ""
    target: str = ""
    deployment_id: str = ""
    region: str = ""
    status: str = ""  # a class (2xx, 4xx, 5xx, errors) or one code
    error_code: str = ""
    min_latency_ms: float | None = None
    streamed: bool | None = None

    def check(self) -> None:
        if self.since not in SINCE:
            raise ServiceError(f"since is one of {', '.join(SINCE)}.", field="since")
        if self.status and self.status not in STATUS_CLASSES and not (self.status.isdigit() and 100 <= int(self.status) <= 599):
            raise ServiceError(f"status is a code from 100 to 599 or one of {', '.join(STATUS_CLASSES)}.", field="status")
        if self.min_latency_ms is not None and self.min_latency_ms < 0:
            raise ServiceError("min_latency_ms is 0 or more.", field="min_latency_ms")


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last row's arrival and request id."""

    at: datetime
    request_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.at.isoformat()}|{self.request_id}".encode()).decode()

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            at, request_id = base64.urlsafe_b64decode(value.encode()).decode().split("|", 1)
            moment = datetime.fromisoformat(at)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            moment = None
        if moment is None or moment.tzinfo is None:  # encode() always writes the offset
            raise ServiceError("This page link is not valid; start again from the first page.", field="cursor")
        return cls(at=moment, request_id=request_id)


@dataclass(frozen=True)
class RequestsPage:
    rows: list[UsageEvent]
    next_cursor: Cursor | None


def _matching(org: Organization, filters: RequestFilters, now: datetime) -> QuerySet[UsageEvent]:
    filters.check()
    events = UsageEvent.objects.for_org(org).filter(at__gte=now - SINCE[filters.since], at__lte=now)
    exact = {
        "key_id": filters.key_id,
        "model": filters.model,
        "route": filters.route,
        "target": filters.target,
        "deployment_id": filters.deployment_id,
        "region": filters.region,
        "error_code": filters.error_code,
    }
    events = events.filter(**{name: value for name, value in exact.items() if value})
    if filters.status in STATUS_CLASSES:
        low, high = STATUS_CLASSES[filters.status]
        events = events.filter(status__gte=low, status__lt=high)
    elif filters.status:
        events = events.filter(status=int(filters.status))
    if filters.min_latency_ms is not None:
        events = events.filter(latency_ms__gte=filters.min_latency_ms)
    if filters.streamed is not None:
        events = events.filter(streamed=filters.streamed)
    return events


def requests_page(
    org: Organization, *, filters: RequestFilters, now: datetime, after: Cursor | None = None, limit: int = PAGE_SIZE
) -> RequestsPage:
    """Newest first; `after` continues from the end of a previous page."""
    events = _matching(org, filters, now)
    if after is not None:
        events = events.filter(Q(at__lt=after.at) | Q(at=after.at, request_id__lt=after.request_id))
    rows = list(events.order_by("-at", "-request_id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return RequestsPage(rows=rows, next_cursor=Cursor(at=rows[-1].at, request_id=rows[-1].request_id) if more else None)


def request_detail(org: Organization, *, request_id: str) -> UsageEvent | None:
    """One request of this organization's; another's id finds nothing."""
    return UsageEvent.objects.for_org(org).filter(request_id=request_id).first()


def charge_of(event: UsageEvent) -> Decimal:
    """What the request was charged (an earlier version's event: its recorded cost), as
    the Usage page and the invoice count it."""
    return (event.cost if event.charge is None else event.charge).normalize()


def seen_values(org: Organization, *, since: str, now: datetime) -> dict[str, list[str]]:
    """The keys, model names, routes and regions that had requests in the range, for the
    filters' choices: read from the hourly rollups, a few rows per hour."""
    start = (now - SINCE.get(since, SINCE["24h"])).replace(minute=0, second=0, microsecond=0)
    rows = UsageRollup.objects.for_org(org).filter(granularity=Granularity.HOUR, bucket__gte=start)
    seen: dict[str, list[str]] = {}
    for column in ("key_id", "model", "route", "region"):
        values = rows.filter(breakdown=Breakdown(column)).exclude(**{column: ""}).values_list(column, flat=True)
        seen[column] = sorted(set(values))
    return seen
