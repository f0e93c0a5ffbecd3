from __future__ import annotations

from django.urls import path

from billing import views

urlpatterns = [
    path("billing/", views.billing, name="billing"),
    path("billing/budget/", views.budget, name="billing-budget"),
    path("billing/payment-method/<str:action>/", views.payment_method, name="billing-payment-method"),
    path("billing/credit/", views.buy_credit, name="billing-credit"),
    path("billing/invoices/<str:invoice_id>.<str:kind>", views.invoice_download, name="invoice-download"),
]
