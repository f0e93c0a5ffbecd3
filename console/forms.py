from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from tenancy.models import ApiKey, Role, User


class SignupForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email", "full_name")

    def clean_email(self) -> str:
        # Whether the address has an account is not said here (tenancy/signup.py).
        return self.cleaned_data["email"].strip().lower()

    def validate_unique(self) -> None:
        """Skipped: an existing address is handled by tenancy.signup, which answers alike."""


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}))

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip().lower()


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=100, label="Organization name")


class ApiKeyForm(forms.Form):
    EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]

    name = forms.CharField(max_length=100, help_text="Say where it is used, e.g. “staging backend”.")
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[ApiKey.Scope.INFERENCE])
    expires_in_days = forms.TypedChoiceField(choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False, label="Expires")
    allowed_models = forms.CharField(
        max_length=2000, required=False, label="Models", help_text="Comma-separated routes or deployments it may call; empty: every one."
    )
    monthly_budget = forms.DecimalField(
        min_value=Decimal("0.01"),
        max_digits=14,
        decimal_places=2,
        required=False,
        label="Monthly budget (USD)",
        help_text="Its requests' per-token charges a month; past it the key gets 402. Empty: none.",
    )

    def models(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["allowed_models"].split(",") if name.strip()]


class ApiKeyLimitsForm(forms.Form):
    """A key's models and budget, changed after it was created."""

    allowed_models = ApiKeyForm.base_fields["allowed_models"]
    monthly_budget = ApiKeyForm.base_fields["monthly_budget"]

    def models(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["allowed_models"].split(",") if name.strip()]


class InvitationForm(forms.Form):
    email = forms.EmailField(required=False, help_text="Leave empty to make a link anyone you give it to can use once.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class DeleteOrganizationForm(forms.Form):
    confirm = forms.CharField(max_length=100, label="Type the organization's name to confirm")

    def __init__(self, *args: object, org_name: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.org_name = org_name

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"]
        if value != self.org_name:
            raise forms.ValidationError("That is not the organization's name.")
        return value


class RequestFilterForm(forms.Form):
    """The Requests page's filters (metering.request_log); every field optional."""

    since = forms.ChoiceField(
        choices=[("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")],
        required=False,
        label="Range",
    )
    q = forms.CharField(max_length=40, required=False, label="Request id")
    key = forms.CharField(max_length=40, required=False, label="API key")
    model = forms.CharField(max_length=100, required=False, label="Model asked for")
    route = forms.CharField(max_length=100, required=False)
    target = forms.CharField(max_length=200, required=False)
    region = forms.CharField(max_length=40, required=False)
    status = forms.CharField(max_length=6, required=False, help_text="2xx, 4xx, 5xx, errors or a code")
    error_code = forms.CharField(max_length=60, required=False, label="Error code")
    min_latency_ms = forms.FloatField(min_value=0, required=False, label="Slower than (ms)")
    streamed = forms.ChoiceField(choices=[("", "Either"), ("yes", "Streamed"), ("no", "Not streamed")], required=False)
    after = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)
