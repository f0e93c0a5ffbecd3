"""The console's Billing page (owners and admins see money; other members a notice), its
budget form, the payment-method links, buying prepaid credit through Stripe Checkout and
the closed invoices' downloads."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from billing import budgets, invoice_documents, invoices
from billing.forms import BudgetForm, CreditForm
from billing.models import BudgetAlert, CreditGrant, Invoice
from billing.stripe import sync as stripe_sync
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Role

# Where Stripe Checkout sends the browser back after buying credit, and what the page says.
CREDIT_RETURNS = {
    "paid": "Thank you: the credit is added here as soon as Stripe confirms the payment (for a bank payment, once it clears).",
    "cancelled": "Checkout was cancelled: nothing was charged.",
}


def _money_context(ctx: OrgContext, form: BudgetForm | None = None, credit_form: CreditForm | None = None) -> dict[str, object]:
    org = ctx.organization
    account = invoices.account_for(org)
    preview = invoices.preview(org)
    grants = [(grant, invoices.remaining_credit(grant)) for grant in CreditGrant.objects.for_org(org).order_by("-granted_at")]
    return {
        "account": account,
        "preview": preview,
        "grants": grants,
        "limit": invoices.spend_limit(org),
        "alerts": list(BudgetAlert.objects.for_org(org)[:12]),
        "budget_progress": budgets.progress(org),
        "past_invoices": list(Invoice.objects.for_org(org)[:24]),
        "budget_form": form
        or BudgetForm(initial={"monthly_budget": account.monthly_budget, "alert_webhook_url": account.alert_webhook_url}),
        "payments": _payments_enabled(),
        "credit_form": credit_form or CreditForm(),
        "free_credit": invoices.free_plan_monthly_credit(),
    }


def _payments_enabled() -> bool:
    return stripe_sync.stripe_client() is not None


@org_page()
@require_safe
def billing(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    context: dict[str, object] = {"active_nav": "billing", "sees_money": ctx.role.sees_money}
    if context["sees_money"]:
        context.update(_money_context(ctx))
        returned = request.GET.get("credit", "")
        if returned in CREDIT_RETURNS:
            messages.add_message(request, messages.SUCCESS if returned == "paid" else messages.INFO, CREDIT_RETURNS[returned])
    return render(request, "billing/billing.html", context)


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def budget(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = BudgetForm(request.POST)
    if form.is_valid():
        try:
            budgets.set_budget(ctx, form.cleaned_data["monthly_budget"], form.cleaned_data["alert_webhook_url"] or "")
        except ServiceError as error:
            form.add_error(error.field, error.message)
        else:
            messages.success(request, "Budget saved.")
            return redirect("billing", org_slug=ctx.organization.slug)
    context = {"active_nav": "billing", "sees_money": True, **_money_context(ctx, form)}
    return render(request, "billing/billing.html", context, status=400)


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def payment_method(request: HttpRequest, ctx: OrgContext, action: str) -> HttpResponse:
    if stripe_sync.stripe_client() is None:
        messages.error(request, "Payments are not connected on this platform: invoices are internal only.")
        return redirect("billing", org_slug=ctx.organization.slug)
    back = request.build_absolute_uri(reverse("billing", kwargs={"org_slug": ctx.organization.slug}))
    if action == "checkout":
        url = stripe_sync.checkout_setup_url(ctx.organization, success_url=back, cancel_url=back)
    elif action == "portal":
        url = stripe_sync.portal_url(ctx.organization, return_url=back)
    else:
        raise Http404("No such action.")
    if url is None:  # Stripe was switched off meanwhile
        raise Http404("Payments are not connected.")
    return HttpResponseRedirect(url)


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def buy_credit(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    """Starts Stripe Checkout for prepaid credit; the webhook grants it once paid."""
    if stripe_sync.stripe_client() is None:
        messages.error(request, "Payments are not connected on this platform: credit is granted by the platform's staff.")
        return redirect("billing", org_slug=ctx.organization.slug)
    form = CreditForm(request.POST)
    if form.is_valid():
        back = request.build_absolute_uri(reverse("billing", kwargs={"org_slug": ctx.organization.slug}))
        try:
            url = stripe_sync.checkout_credit_url(
                org=ctx.organization,
                amount=form.cleaned_data["amount"],
                success_url=f"{back}?credit=paid",
                cancel_url=f"{back}?credit=cancelled",
            )
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            if url is None:  # Stripe was switched off meanwhile
                raise Http404("Payments are not connected.")
            return HttpResponseRedirect(url)
    context = {"active_nav": "billing", "sees_money": True, **_money_context(ctx, credit_form=form)}
    return render(request, "billing/billing.html", context, status=400)


@org_page(read=Role.ADMIN)
@require_safe
def invoice_download(request: HttpRequest, ctx: OrgContext, invoice_id: str, kind: str) -> HttpResponse:
    invoice = Invoice.objects.for_org(ctx.organization).filter(pk=invoice_id).first()
    if invoice is None or kind not in ("csv", "pdf"):
        raise Http404("No such invoice.")
    name = f"switchboard-{invoice.period_start:%Y-%m}-{invoice.pk}"
    if kind == "csv":
        response = HttpResponse(invoice_documents.as_csv(invoice), content_type="text/csv; charset=utf-8")
    else:
        response = HttpResponse(invoice_documents.as_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
    return response
