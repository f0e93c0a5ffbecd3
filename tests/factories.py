from __future__ import annotations

from datetime import datetime

import factory

from tenancy import services
from tenancy.context import OrgContext
from tenancy.models import Invitation, Membership, Organization, Role, User

PASSWORD = "correct-horse-battery-9"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    full_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj: User, create: bool, extracted: object, **kwargs: object) -> None:  # noqa: N805
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


def owner_context(org: Organization) -> OrgContext:
    owner = Membership.objects.for_org(org).filter(role=Role.OWNER).select_related("user").first()
    return OrgContext(organization=org, role=Role.OWNER, user=owner.user if owner else None)


def issue_key(
    org: Organization, scopes: list[str] | None = None, *, name: str = "test key", expires_at: datetime | None = None
) -> services.IssuedKey:
    return services.create_api_key(owner_context(org), name=name, scopes=scopes or ["inference", "read", "write"], expires_at=expires_at)


def issue_invitation(org: Organization, *, email: str = "", role: str = Role.MEMBER) -> services.IssuedInvitation:
    return services.create_invitation(owner_context(org), role=role, email=email)


def invitation_token(issued: services.IssuedInvitation) -> str:
    return issued.url.rstrip("/").rsplit("/", 1)[-1]


__all__ = ["Invitation", "PASSWORD", "issue_key", "issue_invitation", "invitation_token", "owner_context"]


def ensure_clusters() -> None:
    """Two simulated local clusters in two regions, as the run command declares them."""
    from deployments.gpu_catalog import ensure_gpu_types
    from deployments.model_catalog import ensure_builtin_models
    from deployments.models import Cluster, ClusterGpu

    ensure_gpu_types()  # transactional tests flush what migrations seeded
    ensure_builtin_models()
    for name, region in (("local-us-east", "us-east"), ("local-eu-west", "eu-west")):
        cluster, _ = Cluster.objects.get_or_create(
            name=name, defaults={"provider": "local", "region": region, "driver": "local", "simulated": True}
        )
        for gpu, count in (("CPU", 8), ("T4", 2)):
            ClusterGpu.objects.get_or_create(cluster=cluster, gpu_type_id=gpu, defaults={"count": count})


def create_deployment(org: Organization, name: str = "chat", *, environment: str = "development", **spec: object):  # type: ignore[no-untyped-def]
    from deployments import services as deployment_services

    ensure_clusters()
    fields = {"model": "tiny-chat", "gpu_type": "CPU", "allowed_regions": ("us-east",), **spec}
    return deployment_services.create_deployment(
        owner_context(org), name=name, environment=environment, spec=deployment_services.DeploymentSpec(**fields)
    )


def create_provider(
    org: Organization,
    name: str = "upstream",
    *,
    base_url: str = "http://127.0.0.1:9/v1",
    region: str = "us-east",
    api_key: str = "sk-test-provider-key",
    input_price: str = "0.5",
    output_price: str = "1.5",
):  # type: ignore[no-untyped-def]
    from routing import services as routing_services

    return routing_services.create_provider(
        owner_context(org),
        name=name,
        base_url=base_url,
        region=region,
        api_key=api_key,
        input_price_per_mtok=input_price,
        output_price_per_mtok=output_price,
    )


def create_route(org: Organization, name: str = "chat-default", *, targets: list[tuple[object, int]] | None = None, **options: object):  # type: ignore[no-untyped-def]
    """A route; `targets` pairs a deployment or provider (with its model as
    (provider, "model")) with a weight. Without targets, one provider target."""
    from deployments.models import Deployment
    from routing import services as routing_services

    specs = []
    for target, weight in targets or [((create_provider(org, name=f"{name}-provider"), "upstream-model"), 100)]:
        if isinstance(target, Deployment):
            specs.append(routing_services.TargetSpec(deployment_id=target.pk, weight=weight))
        else:
            provider, model = target  # type: ignore[misc]
            specs.append(routing_services.TargetSpec(provider_id=provider.pk, provider_model=model, weight=weight))
    return routing_services.create_route(owner_context(org), routing_services.RouteSpec(name=name, targets=tuple(specs), **options))  # type: ignore[arg-type]


def closed_invoice(org: Organization, month: str = "2026-10"):  # type: ignore[no-untyped-def]
    """A closed month with no usage: an empty, immutable invoice."""
    from datetime import UTC, datetime

    from billing import invoices

    start = datetime.fromisoformat(f"{month}-01").replace(tzinfo=UTC)
    return invoices.close_period(org, start, now=datetime(2026, 11, 15, tzinfo=UTC))


def small_model_files(architecture: str = "LlamaForCausalLM", model_type: str = "llama") -> dict[str, bytes]:
    """A minimal valid model directory, built without torch: a config, a tokenizer and a
    one-tensor safetensors shard (the registry checks layout, not what the weights say)."""
    import json

    import numpy as np
    import safetensors.numpy

    config = {"architectures": [architecture], "model_type": model_type, "max_position_embeddings": 128, "hidden_size": 8}
    return {
        "config.json": json.dumps(config).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        "model.safetensors": safetensors.numpy.save({"weight": np.zeros((4, 8), dtype=np.float32)}),
    }


def start_model_upload(org: Organization, name: str = "my-model", files: dict[str, bytes] | None = None, *, send: bool = True):  # type: ignore[no-untyped-def]
    """An upload of `files` (small_model_files by default), every file sent when `send`."""
    import hashlib

    from deployments import uploads

    files = small_model_files() if files is None else files
    ctx = owner_context(org)
    declared = [uploads.DeclaredFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()) for path, data in files.items()]
    upload = uploads.start_upload(ctx, name=name, files=declared)
    if send:
        for path, data in files.items():
            uploads.receive_chunk(ctx, upload, path=path, offset=0, data=data)
    return upload


def register_model(org: Organization, name: str = "my-model", files: dict[str, bytes] | None = None):  # type: ignore[no-untyped-def]
    from deployments import uploads

    return uploads.complete_upload(owner_context(org), start_model_upload(org, name, files))
