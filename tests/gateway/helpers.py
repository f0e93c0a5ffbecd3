from __future__ import annotations

import time

import httpx
import openai

from deployments.models import Cluster, Deployment, Replica
from routing.models import ExternalProvider, ModelRoute
from tenancy.models import Organization
from tests.factories import create_deployment, create_provider, create_route
from tests.gateway.conftest import Backend


def provider_for(
    org: Organization, backend: Backend, *, region: str = "us-east", input_price: str = "0.5", output_price: str = "1.5"
) -> ExternalProvider:
    return create_provider(
        org,
        name=f"{backend.name}-{region}",
        base_url=backend.url + "/v1",
        region=region,
        input_price=input_price,
        output_price=output_price,
    )


def route_to(org: Organization, name: str, targets: list[tuple[ExternalProvider | Deployment, int]], **options: object) -> ModelRoute:
    return create_route(
        org, name, targets=[((t, "bench-model") if isinstance(t, ExternalProvider) else t, w) for t, w in targets], **options
    )


def deployment_with_replicas(org: Organization, name: str, endpoints: list[tuple[str, str]], **spec: object) -> Deployment:
    """A deployment whose READY replicas (as the control plane would mark them) serve at
    the given (URL, cluster) pairs."""
    deployment = create_deployment(org, name=name, allowed_regions=("us-east", "eu-west"), max_replicas=4, **spec)
    for url, cluster in endpoints:
        Replica.objects.create(
            organization=org,
            deployment=deployment,
            revision=deployment.current_revision,
            cluster=Cluster.objects.get(name=cluster),
            state=Replica.State.READY,
            endpoint=url,
        )
    return deployment


def client(gateway: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key=key, max_retries=0, timeout=30)


def chat(gateway: str, key: str, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello there"}], **extra}
    return httpx.post(gateway + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
