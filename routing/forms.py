from __future__ import annotations

from typing import Any, cast

from django import forms

from routing import selectors
from routing.models import Strategy
from routing.services import MAX_FALLBACKS, UNCHANGED, RouteSpec, TargetSpec
from tenancy.models import Organization


class RouteForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="The model name callers send, e.g. chat-default.")
    strategy = forms.ChoiceField(choices=Strategy.choices)
    allowed_regions = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Allowed regions",
        help_text="None ticked: any region. Never broken, even on failover.",
    )
    fallbacks = forms.CharField(
        required=False, max_length=600, help_text=f"Other routes or deployments to try, in order, comma-separated (up to {MAX_FALLBACKS})."
    )
    max_attempts = forms.IntegerField(min_value=1, max_value=10, initial=3, help_text="Tries in all, fallbacks included.")
    attempt_timeout_s = forms.FloatField(
        min_value=0.1, max_value=600, initial=30, label="Attempt timeout (s)", help_text="Until the answer (or a stream's first byte)."
    )
    deadline_s = forms.FloatField(min_value=0.1, max_value=3600, initial=120, label="Total deadline (s)")
    breaker_failures = forms.IntegerField(min_value=1, max_value=100, initial=5, label="Breaker opens after (failures)")
    breaker_cooldown_s = forms.FloatField(min_value=0.1, max_value=3600, initial=10, label="Breaker cool-down (s)")

    monthly_budget = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=14,
        decimal_places=2,
        label="Monthly budget ($)",
        help_text="Per-token charges of requests made through this route's name, a month; past it the route answers 402 "
        "until the month ends. Empty: no budget. Requests a dedicated deployment serves are billed as GPU time, not per route, "
        "and do not count.",
    )

    def __init__(self, *args: Any, regions: list[str], money: bool, **kwargs: Any) -> None:
        """`money`: the editor's role sees money (Role.sees_money); only then is the budget shown and set."""
        super().__init__(*args, **kwargs)
        cast(forms.MultipleChoiceField, self.fields["allowed_regions"]).choices = [(region, region) for region in regions]
        if not money:
            del self.fields["monthly_budget"]

    def clean_fallbacks(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["fallbacks"].split(",") if name.strip()]


class TargetForm(forms.Form):
    target = forms.ChoiceField(required=False, help_text="A deployment, or a provider's model.")
    provider_model = forms.CharField(
        required=False, max_length=200, label="Provider model", help_text="For provider targets: the provider's model name."
    )
    weight = forms.IntegerField(
        min_value=0, max_value=10_000, initial=100, required=False, help_text="For weighted routes: relative share."
    )

    def __init__(self, *args: Any, choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["target"]).choices = [("", "(none)"), *choices]


TargetFormSet = forms.formset_factory(TargetForm, extra=2, max_num=20)


def target_choices(org: Organization) -> list[tuple[str, str]]:
    deployments = [(f"deployment:{d.pk}", f"Deployment {d.name}") for d in selectors.live_deployments(org)]
    providers = [(f"provider:{p.pk}", f"Provider {p.name} ({p.region})") for p in selectors.providers(org)]
    return deployments + providers


def route_spec(form: RouteForm, targets: Any) -> RouteSpec:
    specs = []
    for target_form in targets.forms:
        data = target_form.cleaned_data
        if not data or not data.get("target"):
            continue
        kind, _, object_id = data["target"].partition(":")
        weight = data["weight"] if data.get("weight") is not None else 100
        if kind == "deployment":
            specs.append(TargetSpec(deployment_id=object_id, weight=weight))
        else:
            specs.append(TargetSpec(provider_id=object_id, provider_model=data.get("provider_model") or "", weight=weight))
    data = form.cleaned_data
    return RouteSpec(
        name=data["name"],
        targets=tuple(specs),
        strategy=data["strategy"],
        allowed_regions=tuple(data["allowed_regions"]),
        fallbacks=tuple(data["fallbacks"]),
        max_attempts=data["max_attempts"],
        attempt_timeout_s=data["attempt_timeout_s"],
        deadline_s=data["deadline_s"],
        breaker_failures=data["breaker_failures"],
        breaker_cooldown_s=data["breaker_cooldown_s"],
        monthly_budget=data["monthly_budget"] if "monthly_budget" in form.fields else UNCHANGED,
    )


class ProviderForm(forms.Form):
    name = forms.SlugField(max_length=60, help_text="Lowercase letters, digits and dashes.")
    base_url = forms.URLField(
        max_length=300,
        assume_scheme="https",
        label="Base URL",
        help_text="The OpenAI-compatible API root, e.g. https://api.example.com/v1.",
    )
    region = forms.CharField(max_length=40, help_text="Where the provider processes requests, for region allow-lists.")
    api_key = forms.CharField(
        required=False,
        max_length=500,
        label="API key",
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again.",
    )
    input_price_per_mtok = forms.DecimalField(min_value=0, max_digits=14, decimal_places=6, label="Input price ($ per million tokens)")
    output_price_per_mtok = forms.DecimalField(min_value=0, max_digits=14, decimal_places=6, label="Output price ($ per million tokens)")

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["api_key"].help_text = "Leave empty to keep the stored key; it is never shown again."
