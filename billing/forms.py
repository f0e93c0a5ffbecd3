from __future__ import annotations

from django import forms


class BudgetForm(forms.Form):
    monthly_budget = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=14,
        decimal_places=2,
        label="Monthly budget (USD)",
        help_text="Alerts at 50%, 80% and 100%. Empty: no budget.",
    )
    alert_webhook_url = forms.URLField(
        required=False,
        max_length=200,
        assume_scheme="https",
        label="Alert webhook URL",
        help_text="Optional: alerts are also POSTed here as JSON.",
    )


class CreditForm(forms.Form):
    """What an owner buys; the amount rules are billing.stripe.credit.credit_amount's."""

    amount = forms.DecimalField(
        label="Amount (USD)",
        help_text="From $5 to $10,000, in whole cents. You pay in Stripe Checkout; the credit is added once the payment succeeds.",
        widget=forms.NumberInput(attrs={"min": "5", "max": "10000", "step": "0.01"}),
    )
