"""Forms of the Admin console. They check shapes (numbers, dates); the services check the
rules and name the field to fix."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from billing.models import Plan
from deployments.models import Cluster, GpuType, Quota
from deployments.quotas import MAX_INT
from tenancy.models import OrgStatus

DATETIME_HELP = "UTC, on a whole hour, not in the past."


def _gpu_types() -> list[GpuType]:
    return list(GpuType.objects.order_by("default_price_per_hour", "code"))


def gpu_field_name(code: str) -> str:
    return "gpu_" + "".join(ch if ch.isalnum() else "_" for ch in code.lower())


class UtcDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"step": 3600, **(attrs or {})}, format="%Y-%m-%dT%H:%M")


class QuotaForm(forms.Form):
    max_replicas = forms.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        label="Replicas",
        help_text="Across all deployments, each counted at its max replicas; checked on deploy and scale.",
    )
    requests_per_minute = forms.IntegerField(
        min_value=1, max_value=MAX_INT, label="Requests per minute", help_text="Organization-wide, in the gateway (429 past it)."
    )
    tokens_per_minute = forms.IntegerField(
        min_value=1, max_value=MAX_INT, label="Tokens per minute", help_text="Prompt plus max_tokens reserved per request, refunded after."
    )
    concurrent_requests = forms.IntegerField(min_value=1, max_value=MAX_INT, label="Concurrent requests")
    key_requests_per_minute = forms.IntegerField(
        min_value=1,
        max_value=MAX_INT,
        required=False,
        label="Requests per minute per key",
        help_text="Empty: a key may use the whole organization's allowance.",
    )
    key_tokens_per_minute = forms.IntegerField(min_value=1, max_value=MAX_INT, required=False, label="Tokens per minute per key")
    key_concurrent_requests = forms.IntegerField(min_value=1, max_value=MAX_INT, required=False, label="Concurrent requests per key")
    monthly_spend_cap = forms.DecimalField(
        min_value=0,
        max_digits=14,
        decimal_places=2,
        required=False,
        label="Monthly spend cap (USD)",
        help_text="A hard cap: past it the gateway answers 402. Empty: none.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gpu_codes: dict[str, str] = {}
        for gpu in _gpu_types():
            name = gpu_field_name(gpu.code)
            self.gpu_codes[name] = gpu.code
            label, note = ("CPU slots", "replicas without a GPU") if gpu.code == "CPU" else (f"{gpu.code} GPUs", f"{gpu.memory_gb} GB")
            self.fields[name] = forms.IntegerField(min_value=0, max_value=MAX_INT, label=label, help_text=note)

    @classmethod
    def initial_for(cls, quota: Quota) -> dict[str, Any]:
        initial: dict[str, Any] = {
            name: getattr(quota, name)
            for name in (
                "max_replicas", "requests_per_minute", "tokens_per_minute", "concurrent_requests",
                "key_requests_per_minute", "key_tokens_per_minute", "key_concurrent_requests", "monthly_spend_cap",
            )
        }  # fmt: skip
        for gpu in _gpu_types():
            initial[gpu_field_name(gpu.code)] = quota.gpu_limit(gpu.code)
        return initial

    def changes(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["gpus"] = {code: data.pop(name) for name, code in self.gpu_codes.items()}
        return data

    def gpu_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.gpu_codes]

    def limit_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name not in self.gpu_codes]


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=[(OrgStatus.ACTIVE, "Active"), (OrgStatus.SUSPENDED, "Suspended")])
    reason = forms.CharField(
        max_length=300, help_text="Shown to the tenant when suspended (the gateway's 403 says it), and kept in both audit logs."
    )


class PlanForm(forms.Form):
    plan = forms.ChoiceField(choices=Plan.choices)
    committed_monthly_minimum = forms.DecimalField(
        min_value=0,
        max_digits=14,
        decimal_places=2,
        initial=0,
        label="Committed monthly minimum (USD)",
        help_text="Enterprise only: a month is invoiced at least this much.",
    )


class CreditForm(forms.Form):
    amount = forms.DecimalField(min_value=0.01, max_digits=14, decimal_places=2, label="Credit (USD)")
    reason = forms.CharField(max_length=200, help_text="The tenant sees it on its Billing page.")
    expires_at = forms.DateTimeField(required=False, widget=UtcDateTimeInput(), label="Expires (UTC)", help_text="Empty: never expires.")


class ClusterForm(forms.Form):
    name = forms.SlugField(max_length=40, help_text="Lowercase letters, digits and dashes, e.g. aws-us-east-1a.")
    provider = forms.CharField(max_length=40, help_text="aws, gcp, azure, local ...")
    region = forms.CharField(max_length=40, help_text="Deployments choose regions; e.g. us-east.")
    driver = forms.ChoiceField(choices=Cluster.Driver.choices)
    agent_url = forms.CharField(
        max_length=300,
        label="Agent URL",
        help_text="Where the driver reaches the cluster: a local agent's URL (http://10.0.0.5:9101) or a Ray GCS (ray://10.0.0.5:6379).",
    )
    status = forms.ChoiceField(
        choices=[(Cluster.Status.ACTIVE, "Active"), (Cluster.Status.CORDONED, "Cordoned")],
        label="Starts",
        help_text="Cordoned: check it before it takes replicas, then mark it up.",
    )
    simulated = forms.BooleanField(required=False, label="Simulated inventory (declared GPUs, not real hardware)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gpu_codes: dict[str, str] = {}
        for gpu in _gpu_types():
            name = gpu_field_name(gpu.code)
            self.gpu_codes[name] = gpu.code
            self.fields[name] = forms.IntegerField(min_value=0, max_value=100_000, initial=0, label=f"{gpu.code} count")

    def inventory(self) -> list[tuple[str, int]]:
        return [(code, self.cleaned_data[name]) for name, code in self.gpu_codes.items()]

    def main_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("name", "provider", "region", "driver", "agent_url", "status", "simulated")]

    def inventory_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.gpu_codes]


class ClusterActionForm(forms.Form):
    reason = forms.CharField(max_length=300, required=False)


class ModelPriceForm(forms.Form):
    model = forms.CharField(max_length=100, help_text="The model name callers send (a route or provider model).")
    input_price_per_mtok = forms.DecimalField(min_value=0, max_digits=18, decimal_places=9, label="Input per 1M tokens (USD)")
    output_price_per_mtok = forms.DecimalField(min_value=0, max_digits=18, decimal_places=9, label="Output per 1M tokens (USD)")
    effective_from = forms.DateTimeField(widget=UtcDateTimeInput(), label="Effective from (UTC)", help_text=DATETIME_HELP)


class GpuPriceForm(forms.Form):
    gpu_type = forms.ChoiceField(label="GPU type")
    price_per_hour = forms.DecimalField(
        min_value=0, max_digits=18, decimal_places=9, label="Price per GPU-hour (USD)", help_text="Billed by the second, e.g. 0.526."
    )
    effective_from = forms.DateTimeField(widget=UtcDateTimeInput(), label="Effective from (UTC)", help_text=DATETIME_HELP)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["gpu_type"]).choices = [(gpu.code, gpu.code) for gpu in _gpu_types()]


class MarkupForm(forms.Form):
    percent = forms.DecimalField(min_value=0, max_digits=7, decimal_places=3, label="Markup on provider cost (%)")
    effective_from = forms.DateTimeField(widget=UtcDateTimeInput(), label="Effective from (UTC)", help_text=DATETIME_HELP)


PRICE_FORMS: dict[str, type[forms.Form]] = {"model": ModelPriceForm, "gpu": GpuPriceForm, "markup": MarkupForm}
