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
