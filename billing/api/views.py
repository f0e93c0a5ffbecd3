"""Billing in the management API, as the Billing page has it: the running invoice, past
invoices (JSON, CSV, PDF), credits, the spend limit, the budget and its alerts, the
payment-method links and buying prepaid credit through Stripe Checkout. Money, so admins,
owners and keys that may write only (`Role.sees_money`); everyone else gets 403 naming
the role it needs. Every amount is a plain decimal string."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing import budgets, invoice_documents, invoices
from billing.models import BudgetAlert, CreditGrant, Invoice
from billing.stripe import sync as stripe_sync
from tenancy.api.serializers import validated
from tenancy.api.views import OrgAPIView
from tenancy.decimals import plain
from tenancy.errors import Conflict
from tenancy.models import Role


class BillingAPIView(OrgAPIView):
    read_role = Role.ADMIN
    write_role = Role.ADMIN


def _money(value: Decimal) -> str:
    return plain(value)


def _line(line: Any) -> dict[str, str]:
    return {
        "kind": str(line.kind),
        "description": line.description,
        "quantity": _money(line.quantity.quantize(Decimal("0.000001"))),
        "unit": line.unit,
        "unit_price": _money(line.unit_price.normalize()),
        "amount": _money(line.amount),
    }


def _draft(draft: invoices.Draft) -> dict[str, Any]:
    return {
        "period_start": draft.period_start.isoformat(),
        "period_end": draft.period_end.isoformat(),
        "plan": draft.plan,
        "currency": draft.currency,
        "lines": [_line(line) for line in draft.lines if line.amount or line.exact_amount],
        "subtotal": _money(draft.subtotal),
        "credits": [{"description": use.description, "amount": _money(use.amount)} for use in draft.credits],
        "minimum_adjustment": _money(draft.minimum_adjustment),
        "carried_adjustments": [
            {"id": adjustment.pk, "description": adjustment.description, "amount": _money(adjustment.amount)}
            for adjustment in draft.adjustments
        ],
        "total": _money(draft.total),
    }


def _invoice(invoice: Invoice, *, lines: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": invoice.pk,
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "plan": invoice.plan,
        "currency": invoice.currency,
        "subtotal": _money(invoice.subtotal),
        "credits_applied": _money(invoice.credits_applied),
        "minimum_adjustment": _money(invoice.minimum_adjustment),
        "carried_adjustments": _money(invoice.carried_adjustments),
        "total": _money(invoice.total),
        "closed_at": invoice.closed_at.isoformat(),
    }
    if lines:
        body["lines"] = [_line(line) for line in invoice.lines.all()]
    return body


class BillingView(BillingAPIView):
    @extend_schema(responses={200: dict}, description="The plan, the spend limit, the running invoice, credits, budget and alerts.")
    def get(self, request: Request) -> Response:
        org = self.ctx.organization
        account = invoices.account_for(org)
        limit = invoices.spend_limit(org)
        grants = CreditGrant.objects.for_org(org).order_by("-granted_at")
        return Response(
            {
                "plan": account.plan,
                "currency": account.currency,
                "spend_limit": {"amount": _money(limit.amount), "reason": limit.reason, "lifted_by": limit.lifted_by} if limit else None,
                "committed_monthly_minimum": _money(account.committed_monthly_minimum),
                "running_invoice": _draft(invoices.preview(org)),
                "credits": [
                    {
                        "id": grant.pk,
                        "amount": _money(grant.amount),
                        "remaining": _money(invoices.remaining_credit(grant)),
                        "withdrawn": _money(grant.withdrawn),  # refunded or disputed through Stripe
                        "reason": grant.reason,
                        "granted_at": grant.granted_at.isoformat(),
                        "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
                    }
                    for grant in grants
                ],
                "budget": {
                    "monthly_budget": _money(account.monthly_budget) if account.monthly_budget is not None else None,
                    "alert_webhook_url": account.alert_webhook_url,
                },
                "alerts": [
                    {
                        "period_start": alert.period_start.isoformat(),
                        "threshold_percent": alert.threshold_percent,
                        "budget": _money(alert.budget),
                        "spend": _money(alert.spend),
                        "at": alert.created_at.isoformat(),
                    }
                    for alert in BudgetAlert.objects.for_org(org)[:24]
                ],
                "payments_connected": stripe_sync.stripe_client() is not None,
            }
        )


class BudgetSerializer(serializers.Serializer):
    monthly_budget = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=Decimal(0), allow_null=True)
    alert_webhook_url = serializers.CharField(max_length=500, allow_blank=True, default="")


class BudgetView(BillingAPIView):
    @extend_schema(request=BudgetSerializer, responses={200: dict}, description="Sets the monthly budget (alerts at 50, 80, 100%).")
    def put(self, request: Request) -> Response:
        data = validated(BudgetSerializer, request.data)
        account = budgets.set_budget(self.ctx, data["monthly_budget"], data["alert_webhook_url"])
        budget = _money(account.monthly_budget) if account.monthly_budget is not None else None
        return Response({"monthly_budget": budget, "alert_webhook_url": account.alert_webhook_url})


class InvoiceListView(BillingAPIView):
    @extend_schema(operation_id="billing_invoices_list", responses={200: dict}, description="Closed months, newest first.")
    def get(self, request: Request) -> Response:
        return Response({"results": [_invoice(invoice, lines=False) for invoice in Invoice.objects.for_org(self.ctx.organization)[:120]]})


class InvoiceDetailView(BillingAPIView):
    def _invoice(self, invoice_id: str) -> Invoice:
        invoice = Invoice.objects.for_org(self.ctx.organization).filter(pk=invoice_id).first()
        if invoice is None:
            raise Http404("No such invoice.")
        return invoice

    @extend_schema(operation_id="billing_invoice_retrieve", responses={200: dict}, description="One closed month with its lines.")
    def get(self, request: Request, invoice_id: str) -> Response:
        return Response(_invoice(self._invoice(invoice_id), lines=True))


class InvoiceDocumentView(InvoiceDetailView):
    @extend_schema(
        operation_id="billing_invoice_document",
        responses={(200, "text/csv"): str, (200, "application/pdf"): bytes},
        description="The invoice as CSV or PDF.",
    )
    def get(self, request: Request, invoice_id: str, kind: str) -> HttpResponse:  # type: ignore[override]
        invoice = self._invoice(invoice_id)
        if kind == "csv":
            response = HttpResponse(invoice_documents.as_csv(invoice), content_type="text/csv; charset=utf-8")
        elif kind == "pdf":
            response = HttpResponse(invoice_documents.as_pdf(invoice), content_type="application/pdf")
        else:
            raise Http404("Invoices come as csv or pdf.")
        response["Content-Disposition"] = f'attachment; filename="switchboard-{invoice.period_start:%Y-%m}-{invoice.pk}.{kind}"'
        return response


class ReturnUrlSerializer(serializers.Serializer):
    return_url = serializers.URLField(max_length=500, help_text="Where Stripe sends the browser back to.")


class PaymentLinkView(BillingAPIView):
    action = ""

    @extend_schema(request=ReturnUrlSerializer, responses={201: dict}, description="A Stripe page for the payment method.")
    def post(self, request: Request) -> Response:
        back = validated(ReturnUrlSerializer, request.data)["return_url"]
        if self.action == "checkout":
            url = stripe_sync.checkout_setup_url(self.ctx.organization, success_url=back, cancel_url=back)
        else:
            url = stripe_sync.portal_url(self.ctx.organization, return_url=back)
        if url is None:
            raise Conflict("Payments are not connected on this platform: invoices are internal only.")
        return Response({"url": url}, status=status.HTTP_201_CREATED)


class CheckoutView(PaymentLinkView):
    action = "checkout"


class PortalView(PaymentLinkView):
    action = "portal"


class CreditCheckoutSerializer(serializers.Serializer):
    amount = serializers.DecimalField(
        max_digits=None, decimal_places=None, help_text='US dollars to buy, in whole cents, from 5 to 10000 (a string, e.g. "25.00").'
    )
    return_url = serializers.URLField(
        max_length=500, required=False, help_text="Where Stripe sends the browser back to; the console's Billing page if left out."
    )


class CreditCheckoutView(BillingAPIView):
    @extend_schema(
        operation_id="billing_credit_checkout",
        request=CreditCheckoutSerializer,
        responses={201: dict},
        description="A Stripe Checkout page to buy prepaid credit; the credit is granted once Stripe reports the payment.",
    )
    def post(self, request: Request) -> Response:
        data = validated(CreditCheckoutSerializer, request.data)
        org = self.ctx.organization
        back = data.get("return_url") or request.build_absolute_uri(reverse("billing", kwargs={"org_slug": org.slug}))
        url = stripe_sync.checkout_credit_url(org=org, amount=data["amount"], success_url=back, cancel_url=back)
        if url is None:
            raise Conflict("Payments are not connected on this platform: credit is granted by the platform's staff.")
        return Response({"url": url}, status=status.HTTP_201_CREATED)
