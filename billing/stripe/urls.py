"""Stripe's webhook, at the site's top level. config/urls.py includes it as
`path("billing/stripe/", include("billing.stripe.urls"))`, so Stripe posts to
`/billing/stripe/webhook/`."""

from __future__ import annotations

from django.urls import path

from billing.stripe import views as stripe_views

urlpatterns = [
    path("webhook/", stripe_views.stripe_webhook, name="stripe-webhook"),
]
