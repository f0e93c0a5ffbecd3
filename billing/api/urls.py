from __future__ import annotations

from django.urls import path

from billing.api import views

urlpatterns = [
    path("billing/", views.BillingView.as_view(), name="api-billing"),
    path("billing/budget/", views.BudgetView.as_view(), name="api-billing-budget"),
    path("billing/invoices/", views.InvoiceListView.as_view(), name="api-invoices"),
    path("billing/invoices/<str:invoice_id>/", views.InvoiceDetailView.as_view(), name="api-invoice"),
    path("billing/invoices/<str:invoice_id>/<str:kind>/", views.InvoiceDocumentView.as_view(), name="api-invoice-document"),
    path("billing/checkout/", views.CheckoutView.as_view(), name="api-billing-checkout"),
    path("billing/portal/", views.PortalView.as_view(), name="api-billing-portal"),
    path("billing/credit/checkout/", views.CreditCheckoutView.as_view(), name="api-billing-credit-checkout"),
]
