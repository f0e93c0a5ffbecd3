"""Stripe's webhook endpoint: thin, one call into billing.stripe.sync."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.stripe import sync as stripe_sync


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    result = stripe_sync.handle_webhook(request.body, request.headers.get("Stripe-Signature"))
    if result.status >= 400:
        return JsonResponse({"error": {"type": "invalid_request_error", "message": result.message}}, status=result.status)
    return JsonResponse({"received": True, "outcome": result.outcome}, status=result.status)
