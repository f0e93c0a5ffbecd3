"""The request log in the management API (metering.request_log): requests one by one,
newest first, filtered, keyset-paginated; and one request by its id."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from metering import request_log
from metering.models import UsageEvent
from tenancy.api.serializers import validated
from tenancy.api.views import OrgAPIView
from tenancy.decimals import plain


class RequestQuerySerializer(serializers.Serializer):
    since = serializers.ChoiceField(choices=list(request_log.SINCE), default="24h")
    key = serializers.CharField(required=False, max_length=40, help_text="An API key's id.")
    model = serializers.CharField(required=False, max_length=100, help_text="The model name the caller asked for.")
    route = serializers.CharField(required=False, max_length=100)
    target = serializers.CharField(required=False, max_length=200)
    deployment = serializers.CharField(required=False, max_length=40)
    region = serializers.CharField(required=False, max_length=40)
    status = serializers.CharField(required=False, max_length=6, help_text="2xx, 4xx, 5xx, errors, or one code.")
    error_code = serializers.CharField(required=False, max_length=60)
    min_latency_ms = serializers.FloatField(required=False, min_value=0)
    streamed = serializers.BooleanField(required=False, allow_null=True, default=None)
    after = serializers.CharField(required=False, max_length=200, help_text="The `next` of the previous page.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=request_log.PAGE_SIZE)


class RequestSerializer(serializers.ModelSerializer):
    charge = serializers.SerializerMethodField(help_text="USD charged per token, as the invoice rates it; absent below admin.")

    class Meta:
        model = UsageEvent
        fields = [
            "request_id",
            "at",
            "key_id",
            "endpoint",
            "model",
            "route",
            "target",
            "deployment_id",
            "served_model",
            "region",
            "status",
            "error_code",
            "streamed",
            "attempts",
            "input_tokens",
            "output_tokens",
            "latency_ms",
            "ttft_ms",
            "charge",
        ]
        read_only_fields = fields

    def get_charge(self, event: UsageEvent) -> str:
        return plain(request_log.charge_of(event))

    def to_representation(self, instance: UsageEvent) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        ctx = self.context.get("ctx")
        if ctx is None or not ctx.role.sees_money:  # viewers and read-only keys see no money
            data.pop("charge", None)
        return data


_PARAMETERS = [OpenApiParameter(name, str, required=False) for name in RequestQuerySerializer().fields]


class RequestListView(OrgAPIView):
    serializer_class = RequestSerializer
    pagination_class = None  # keyset pages: `next` continues

    @extend_schema(
        operation_id="requests_list",
        parameters=_PARAMETERS,
        responses=inline_serializer(
            "RequestPage", {"results": RequestSerializer(many=True), "next": serializers.CharField(allow_null=True)}
        ),
        description="The organization's requests, newest first, with every filter optional. Pass `next` as `after` for the next page.",
    )
    def get(self, request: Request) -> Response:
        data = validated(RequestQuerySerializer, request.query_params)
        filters = request_log.RequestFilters(
            since=data["since"],
            key_id=data.get("key", ""),
            model=data.get("model", ""),
            route=data.get("route", ""),
            target=data.get("target", ""),
            deployment_id=data.get("deployment", ""),
            region=data.get("region", ""),
            status=data.get("status", "").strip().lower(),
            error_code=data.get("error_code", ""),
            min_latency_ms=data.get("min_latency_ms"),
            streamed=data.get("streamed"),
        )
        after = request_log.Cursor.decode(data["after"]) if data.get("after") else None
        page = request_log.requests_page(self.ctx.organization, filters=filters, now=timezone.now(), after=after, limit=data["limit"])
        return Response(
            {
                "results": self.get_serializer(page.rows, many=True).data,
                "next": page.next_cursor.encode() if page.next_cursor else None,
            }
        )


class RequestDetailView(OrgAPIView):
    serializer_class = RequestSerializer

    @extend_schema(operation_id="requests_retrieve", description="One request by the id its answer carried (x-request-id).")
    def get(self, request: Request, request_id: str) -> Response:
        event = request_log.request_detail(self.ctx.organization, request_id=request_id)
        if event is None:
            raise Http404("No such request in this organization.")
        return Response(self.get_serializer(event).data)
