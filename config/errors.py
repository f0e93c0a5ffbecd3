"""Error answers: the console's own pages, and under /api/ the API's JSON error shape, never
an HTML page (and never Django's debug pages unless SWITCHBOARD_DEBUG is on).

A database that cannot be reached (restarting, failing over, a network blip) is not our
bug and not the user's: it answers 503 with Retry-After, which browsers, the SDKs and
load balancers know to retry, instead of 500."""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views import defaults

from tenancy.api.errors import error_body, json_not_found

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(400, "The request could not be understood.", "bad_request"), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(403, str(exception) or "Your role does not allow this.", "permission_denied"), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_not_found()
    return defaults.page_not_found(request, exception)


def _database_unreachable() -> bool:
    # Django calls the 500 handler inside its `except`, so the exception is at hand.
    return isinstance(sys.exc_info()[1], OperationalError | InterfaceError)


def server_error(request: HttpRequest) -> HttpResponse:
    if _database_unreachable():
        return _unavailable(request)
    if request.path.startswith("/api/"):
        message = "Something went wrong on our side; it has been logged. Retry, and quote the X-Request-Id if it keeps failing."
        return JsonResponse(error_body(500, message, "internal_error"), status=500)
    return defaults.server_error(request)


def _unavailable(request: HttpRequest) -> HttpResponse:
    log.warning("database unreachable for %s %s: answered 503", request.method, request.path)
    message = f"Switchboard cannot reach its database for a moment. Retry in {RETRY_AFTER_S} seconds."
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body(503, message, "service_unavailable"), status=503)
    else:
        # A page of its own that reads nothing from the database (the usual layout asks
        # for the user and their organizations).
        response = HttpResponse(render_to_string("503.html", {"message": message}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response
