"""Usage in the management API: series from the rollups, CSV exports streamed row by row
(a month of events never sits in memory), and dedicated replica time in GPU-seconds."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.http import Http404, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from deployments.models import Deployment
from metering import gpu_time, selectors
from metering.models import Granularity, UsageEvent
from tenancy.api.serializers import validated
from tenancy.api.views import OrgAPIView
from tenancy.errors import ServiceError
from tenancy.spreadsheet import safe_row

FILTERS = {"route": "route", "deployment": "deployment_id", "region": "region", "key": "key_id", "model": "model"}
GROUPS = {"route": "route", "deployment": "deployment_id", "region": "region", "key": "key_id", "model": "model"}


class UsageQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Inclusive; default: 24 hours ago.")
    end = serializers.DateTimeField(required=False, help_text="Exclusive; default: now.")
    granularity = serializers.ChoiceField(choices=Granularity.choices, default=Granularity.HOUR)
    tz = serializers.CharField(default="UTC", max_length=64, help_text="IANA time zone for bucket labels and day boundaries.")
    group_by = serializers.CharField(default="", allow_blank=True, help_text="Comma-separated: " + ", ".join(GROUPS))
    route = serializers.CharField(required=False, max_length=100)
    deployment = serializers.CharField(required=False, max_length=40)
    region = serializers.CharField(required=False, max_length=40)
    key = serializers.CharField(required=False, max_length=40)
    model = serializers.CharField(required=False, max_length=100)


def _query(request: Request) -> selectors.UsageQuery:
    data = validated(UsageQuerySerializer, request.query_params)
    try:
        zone = ZoneInfo(data["tz"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ServiceError(f"Unknown time zone {data['tz']!r}; use an IANA name such as Europe/Paris.", field="tz") from None
    end = data.get("end") or datetime.now(UTC)
    start = data.get("start") or end - timedelta(hours=24)
    if start >= end:
        raise ServiceError("start must be before end.", field="start")
    span = selectors.MAX_SPAN[data["granularity"]]
    if end - start > span:
        raise ServiceError(
            f"At {data['granularity']} granularity a query spans at most {span.days} days; narrow it or pick a coarser granularity.",
            field="start",
        )
    groups = [name.strip() for name in data["group_by"].split(",") if name.strip()]
    unknown = [name for name in groups if name not in GROUPS]
    if unknown:
        raise ServiceError(f"Cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)}.", field="group_by")
    filters = {FILTERS[name]: data[name] for name in FILTERS if data.get(name)}
    return selectors.UsageQuery(
        start=start,
        end=end,
        granularity=data["granularity"],
        timezone=zone,
        group_by=tuple(GROUPS[g] for g in dict.fromkeys(groups)),
        filters=filters,
    )


_PARAMETERS = [OpenApiParameter(name, str, required=False) for name in ("start", "end", "granularity", "tz", "group_by", *FILTERS)]


class UsageView(OrgAPIView):
    serializer_class = UsageQuerySerializer

    @extend_schema(
        parameters=_PARAMETERS,
        responses={200: dict},
        description="Usage series from the rollups: requests, errors, tokens, cost and latency percentiles per bucket and group.",
    )
    def get(self, request: Request) -> Response:
        query = _query(request)
        points, total = selectors.usage_series(self.ctx.organization, query)
        hide = set() if self.ctx.role.sees_money else {"cost"}  # viewers and read-only keys see no money
        body: dict[str, Any] = {
            "granularity": query.granularity,
            "timezone": query.timezone.key,
            "start": query.start.astimezone(query.timezone).isoformat(),
            "end": query.end.astimezone(query.timezone).isoformat(),
            "group_by": [name for name, column in GROUPS.items() if column in query.group_by],
            "series": [{key: value for key, value in point.as_dict().items() if key not in hide} for point in points],
            "totals": {key: value for key, value in total.as_dict().items() if key != "bucket" and key not in hide},
        }
        return Response(body)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv(rows: Iterator[list[object]], header: list[str], filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(safe_row(row))  # caller-chosen names never run as formulas

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


EVENT_COLUMNS = [
    "request_id",
    "at",
    "key_id",
    "endpoint",
    "model",
    "served_model",
    "route",
    "target",
    "deployment_id",
    "region",
    "status",
    "error_code",
    "streamed",
    "attempts",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "ttft_ms",
    "cost",
    "provider_cost",
]
MONEY_COLUMNS = {"cost", "provider_cost"}


def _event_value(event: UsageEvent, column: str, zone: ZoneInfo) -> object:
    """`cost` is what the request was charged (an earlier version's event: its recorded
    cost), as the invoice rates it; `provider_cost` the external provider's own cost."""
    if column == "at":
        return event.at.astimezone(zone).isoformat()
    if column == "cost":
        return event.cost if event.charge is None else event.charge
    if column == "provider_cost":
        return event.cost
    return getattr(event, column)


class UsageEventsCsvView(OrgAPIView):
    serializer_class = UsageQuerySerializer

    @extend_schema(parameters=_PARAMETERS, responses={(200, "text/csv"): str}, description="Raw usage events as CSV, streamed.")
    def get(self, request: Request) -> StreamingHttpResponse:
        query = _query(request)
        events = selectors.raw_events(self.ctx.organization, query.start, query.end, query.filters)
        columns = EVENT_COLUMNS if self.ctx.role.sees_money else [c for c in EVENT_COLUMNS if c not in MONEY_COLUMNS]
        rows = ([_event_value(e, c, query.timezone) for c in columns] for e in events)
        return _csv(rows, columns, "usage-events.csv")


class UsageRollupsCsvView(OrgAPIView):
    serializer_class = UsageQuerySerializer

    @extend_schema(parameters=_PARAMETERS, responses={(200, "text/csv"): str}, description="The usage series as CSV.")
    def get(self, request: Request) -> StreamingHttpResponse:
        query = _query(request)
        points, _ = selectors.usage_series(self.ctx.organization, query)
        groups = [name for name, column in GROUPS.items() if column in query.group_by]
        money = self.ctx.role.sees_money
        header = [
            "bucket",
            *groups,
            "requests",
            "client_errors",
            "server_errors",
            "input_tokens",
            "output_tokens",
            *(["cost"] if money else []),
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
        ]

        def rows() -> Iterator[list[object]]:
            for point in points:
                data = point.as_dict()
                latency = data["latency_ms"]
                yield [
                    data["bucket"],
                    *(point.group[GROUPS[g]] for g in groups),
                    point.requests,
                    point.client_errors,
                    point.server_errors,
                    point.input_tokens,
                    point.output_tokens,
                    *([data["cost"]] if money else []),
                    latency["p50"],  # type: ignore[index]
                    latency["p95"],  # type: ignore[index]
                    latency["p99"],  # type: ignore[index]
                ]

        return _csv(rows(), header, "usage.csv")


GPU_GROUPS = {"deployment": "deployment_id", "gpu_type": "gpu_type", "region": "region", "cluster": "cluster"}


class GpuSecondsQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Inclusive; default: 24 hours ago.")
    end = serializers.DateTimeField(required=False, help_text="Exclusive; default: now. Running replicas count until now.")
    group_by = serializers.CharField(
        default="deployment", allow_blank=True, help_text="Comma-separated: " + ", ".join(GPU_GROUPS) + "; empty for the total only."
    )
    deployment = serializers.CharField(required=False, max_length=40, help_text="Only this deployment's replicas.")


class GpuSecondsRowSerializer(serializers.Serializer):
    deployment_id = serializers.CharField(required=False, help_text="With group_by deployment.")
    deployment_name = serializers.CharField(required=False, help_text="With group_by deployment.")
    gpu_type = serializers.CharField(required=False, help_text="With group_by gpu_type.")
    region = serializers.CharField(required=False, help_text="With group_by region.")
    cluster = serializers.CharField(required=False, help_text="With group_by cluster.")
    gpu_seconds = serializers.DecimalField(max_digits=24, decimal_places=6, help_text="Exact, as a decimal string.")


class GpuSecondsSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.ListField(child=serializers.CharField())
    rows = GpuSecondsRowSerializer(many=True)
    total_gpu_seconds = serializers.DecimalField(max_digits=24, decimal_places=6)


def _row(row: gpu_time.GpuSecondsRow, groups: list[str]) -> dict[str, str | None]:
    body: dict[str, str | None] = {}
    if "deployment" in groups:
        body.update(deployment_id=row.deployment_id, deployment_name=row.deployment_name)
    for name in ("gpu_type", "region", "cluster"):
        if name in groups:
            body[name] = getattr(row, name)
    body["gpu_seconds"] = str(row.gpu_seconds)
    return body


class GpuSecondsView(OrgAPIView):
    serializer_class = GpuSecondsQuerySerializer

    @extend_schema(
        parameters=[OpenApiParameter(name, str, required=False) for name in ("start", "end", "group_by", "deployment")],
        responses={200: GpuSecondsSerializer},
        description="GPU-seconds held by dedicated replicas, from the start of provisioning (cold start included) until stopped or failed.",
    )
    def get(self, request: Request) -> Response:
        data = validated(GpuSecondsQuerySerializer, request.query_params)
        end = data.get("end") or datetime.now(UTC)
        start = data.get("start") or end - timedelta(hours=24)
        if start >= end:
            raise ServiceError("start must be before end.", field="start")
        groups = list(dict.fromkeys(name.strip() for name in data["group_by"].split(",") if name.strip()))
        unknown = [name for name in groups if name not in GPU_GROUPS]
        if unknown:
            raise ServiceError(f"Cannot group by {', '.join(unknown)}; choose from {', '.join(GPU_GROUPS)}.", field="group_by")
        deployment_id = data.get("deployment")
        # Soft-deleted deployments included: their replicas were billed. Another tenant's
        # id answers like one that does not exist.
        if deployment_id and not Deployment.objects.for_org(self.ctx.organization).filter(pk=deployment_id).exists():
            raise Http404("No such deployment in this organization.")
        rows = gpu_time.gpu_seconds(
            self.ctx.organization, start, end, tuple(GPU_GROUPS[name] for name in groups), deployment_id=deployment_id
        )
        body = {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "group_by": groups,
            "rows": [_row(row, groups) for row in rows],
            "total_gpu_seconds": str(sum((row.gpu_seconds for row in rows), Decimal("0.000000"))),
        }
        return Response(body)
