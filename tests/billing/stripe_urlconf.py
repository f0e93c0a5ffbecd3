"""The project's URLs with Stripe's webhook mounted where config/urls.py mounts it
(`/billing/stripe/webhook/`), so these tests pass before and after that include exists."""

from __future__ import annotations

from django.urls import include, path

from config.urls import handler404
from config.urls import urlpatterns as console_urlpatterns

urlpatterns = [path("billing/stripe/", include("billing.stripe.urls")), *console_urlpatterns]

__all__ = ["handler404", "urlpatterns"]
