from __future__ import annotations

from django.urls import path

from billing import billing_views, views

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("billing/", billing_views.billing, name="billing"),
    path("billing/budget/", billing_views.budget, name="billing-budget"),
    path("billing/payment-method/<str:action>/", billing_views.payment_method, name="billing-payment-method"),
    path("billing/invoices/<str:invoice_id>.<str:kind>", billing_views.invoice_download, name="invoice-download"),
]
