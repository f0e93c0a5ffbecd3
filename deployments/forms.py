from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from django import forms

from deployments import model_catalog, selectors
from deployments.models import CatalogModel, Deployment
from deployments.prices import GpuPriceBook
from tenancy.models import Organization


class DeploymentForm(forms.Form):
    name = forms.SlugField(max_length=60, help_text="Lowercase letters, digits and dashes; it is also the model name callers use.")
    model = forms.CharField(max_length=100, widget=forms.Select)
    gpu_type = forms.ChoiceField(label="GPU type")
    allowed_regions = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Regions")
    min_replicas = forms.IntegerField(min_value=0, max_value=100, initial=1, help_text="0 lets it scale to zero when idle.")
    max_replicas = forms.IntegerField(min_value=1, max_value=100, initial=1)
    target_concurrency = forms.IntegerField(
        min_value=1, max_value=10_000, initial=4, help_text="Requests in flight per replica before scaling up."
    )
    scale_down_delay_s = forms.IntegerField(min_value=0, max_value=86_400, initial=60, label="Scale-down delay (s)")
    idle_timeout_s = forms.IntegerField(min_value=0, max_value=604_800, initial=300, label="Scale-to-zero idle timeout (s)")
    # Staging is made from a production deployment's page (deployments.environments).
    environment = forms.ChoiceField(
        choices=[(value, label) for value, label in Deployment.Environment.choices if value != Deployment.Environment.STAGING],
        help_text="Production deployments can have a staging environment, created from their page.",
    )

    def __init__(self, *args: object, organization: Organization, staff: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # The built-in models and the organization's own (test models for staff only); the
        # deploy path checks the name it is sent.
        self.fields["model"].widget.choices = [
            (model.name, f"{model.name}: {model.description}" if model.description else model.name)
            for model in model_catalog.offered_to(organization, staff=staff)
        ]
        # The organization's prices from the book: what each GPU-hour will be billed at.
        book, now = GpuPriceBook.load(organization.pk), datetime.now(UTC)
        choices = []
        for gpu in selectors.gpu_types():
            rate = book.at(gpu.code, now)
            price = f"${rate.price_per_hour.normalize():f}/h per replica" if rate else "no price"
            memory = f"{gpu.memory_gb} GB" if gpu.memory_gb else "no GPU, host memory"
            choices.append((gpu.code, f"{gpu.code} ({memory}), {price}"))
        cast(forms.ChoiceField, self.fields["gpu_type"]).choices = choices
        cast(forms.MultipleChoiceField, self.fields["allowed_regions"]).choices = [
            (row["region"], f"{row['region']} ({_cluster_names(cast(list[dict[str, object]], row['clusters']))})")
            for row in selectors.regions()
        ]


def _cluster_names(clusters: list[dict[str, object]]) -> str:
    return ", ".join(str(cluster["name"]) + (" simulated" if cluster["simulated"] else "") for cluster in clusters)


class ScaleForm(forms.Form):
    min_replicas = forms.IntegerField(min_value=0, max_value=100)
    max_replicas = forms.IntegerField(min_value=1, max_value=100)
    save_only = forms.BooleanField(required=False, label="Save as a revision without going live")


class CanaryStartForm(forms.Form):
    """A canary of a saved revision, from the deployment page (deployments.canaries)."""

    revision = forms.IntegerField(min_value=1, label="Revision")
    traffic_percent = forms.IntegerField(min_value=1, max_value=99, initial=10, label="Share of requests (%)")
    window_s = forms.IntegerField(min_value=1, max_value=86_400, initial=300, label="Judged over (seconds)")


class StagingCreateForm(forms.Form):
    """A staging environment for a production deployment (deployments.environments)."""

    name = forms.SlugField(max_length=60, required=False, label="Name on the gateway")
    scale_to_zero = forms.BooleanField(required=False, initial=True, label="Scale staging to zero when idle")


class PromoteToProductionForm(forms.Form):
    """Staging's current revision to production: at once, or by a canary when a share is given."""

    keep_production_scaling = forms.BooleanField(required=False, label="Keep production's scaling (replicas, concurrency, timeouts)")
    canary_percent = forms.IntegerField(min_value=1, max_value=99, required=False, label="By canary: share of requests (%)")
    window_s = forms.IntegerField(min_value=1, max_value=86_400, initial=300, required=False, label="Judged over (seconds)")


class HubModelForm(forms.Form):
    """Registering a model by Hugging Face repo id and revision (deployments.registry)."""

    prefix = "hub"  # its fields share the Models page with the upload form's

    name = forms.CharField(max_length=100, help_text="What deployments call the model.")
    repo_id = forms.CharField(max_length=200, label="Repo id", help_text="owner/name, as on huggingface.co.")
    revision = forms.CharField(max_length=255, initial="main", help_text="A commit hash pins the files; a branch or tag may move.")
    task = forms.ChoiceField(choices=CatalogModel.Task.choices, help_text="Not read from the files: a replica fetches them at start.")
    memory_gb = forms.IntegerField(min_value=1, max_value=10_000, initial=1, label="Memory (GB)", help_text="What one replica needs.")
    context_length = forms.IntegerField(min_value=1, max_value=10_000_000, initial=2048)
    license = forms.CharField(max_length=100, required=False, label="Licence")
    description = forms.CharField(max_length=300, required=False)
