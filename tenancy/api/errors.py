"""The management API's one error shape:

    {"error": {"type": "...", "code": "...", "message": "...", "fields": {"name": ["..."]}}}

`fields` is present for input errors and names each field to fix.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from tenancy.errors import ServiceError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_body(status_code: int, message: str, code: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": _TYPES.get(status_code, "api_error"), "code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _flatten(detail: Any, path: str = "") -> dict[str, list[str]]:
    """DRF nests errors like its input; flatten to `a.b.0.c: [messages]`."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "non_field_errors" if key in ("non_field_errors", "__all__") and not path else f"{path}.{key}" if path else str(key)
            for field, messages in _flatten(value, name).items():
                out.setdefault(field, []).extend(messages)
    elif isinstance(detail, list) and detail and all(not isinstance(item, (dict, list)) for item in detail):
        out[path or "non_field_errors"] = [str(item) for item in detail]
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            for field, messages in _flatten(value, f"{path}.{index}" if path else str(index)).items():
                out.setdefault(field, []).extend(messages)
    else:
        out[path or "non_field_errors"] = [str(detail)]
    return out


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        set_rollback()
        fields = {exc.field: exc.details or [exc.message]} if exc.field else None
        return Response(error_body(exc.status_code, exc.message, exc.code, fields), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        summary = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in fields.items())
        response.data = error_body(400, f"Invalid input. {summary}", "invalid_input", fields)
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        response.data = error_body(
            415, f"{exc.detail} Send the body as JSON with `Content-Type: application/json`.", "unsupported_media_type"
        )
    elif isinstance(exc, exceptions.ParseError):
        response.data = error_body(400, f"The body is not valid JSON: {exc.detail}", "invalid_json")
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(response.status_code, str(exc.detail), code)
    return response


def json_not_found(message: str = "No such endpoint. See /api/v1/docs/ for the API reference.") -> JsonResponse:
    return JsonResponse(error_body(status.HTTP_404_NOT_FOUND, message, "not_found"), status=404)


def unknown_endpoint(request: HttpRequest) -> JsonResponse:
    return json_not_found(f"No endpoint at {request.path}. See /api/v1/docs/ for the API reference.")
