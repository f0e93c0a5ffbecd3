"""Models registered by Hugging Face repo id and revision, fast: the API and the console
form check the id, the revision and the task and say what to fix; deleting one leaves the
model storage alone; a replica is asked for hf://OWNER/NAME@REVISION; the agent passes it
on; the model server resolves it from a local mirror (never the internet here) and says
what to do when it cannot. End to end through the gateway: tests/gateway/test_registered_models.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from deployments.agent import build_agent_app
from deployments.models import CatalogModel, Replica
from deployments.reconcile import replica_request
from modelserver import hub
from modelserver.__main__ import model_spec, parser
from modelserver.ray_host import HostSpec, server_command
from tests.conftest import Tenants
from tests.controlplane.test_registered_deploys import AGENT_TOKEN, Started, _agent_create
from tests.factories import create_deployment, small_model_files
from tests.helpers import session_api

HUB_MODEL = {"name": "acme-chat", "repo_id": "acme/tiny-chat", "revision": "main", "task": "chat"}


def test_a_model_registers_by_repo_id_and_revision_for_its_organization_only(tenants: Tenants) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    response = api.post("/api/v1/models/", {**HUB_MODEL, "memory_gb": 2, "license": "apache-2.0"}, format="json")
    assert response.status_code == 201, response.content
    model = response.json()
    assert (model["source_kind"], model["source"], model["revision"], model["task"]) == ("hub", "acme/tiny-chat", "main", "chat")
    assert (model["memory_gb"], model["context_length"], model["license"], model["builtin"]) == (2, 2048, "apache-2.0", False)
    assert "acme-chat" in {row["name"] for row in api.get("/api/v1/models/").json()["results"]}
    other = session_api(tenants.owner_b, tenants.org_b)
    assert other.get(f"/api/v1/models/{model['id']}/").status_code == 404
    assert "acme-chat" not in {row["name"] for row in other.get("/api/v1/models/").json()["results"]}
    assert other.post("/api/v1/models/", HUB_MODEL, format="json").status_code == 201  # names are per organization
    viewer = session_api(tenants.viewer_a, tenants.org_a)
    assert viewer.post("/api/v1/models/", {**HUB_MODEL, "name": "x"}, format="json").status_code == 403
    again = api.post("/api/v1/models/", HUB_MODEL, format="json")
    assert again.status_code == 409 and "already has a model named 'acme-chat'" in again.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"repo_id": "tiny-chat"}, "repo_id", "Use the form owner/name"),
        ({"repo_id": "acme/tiny--chat"}, "repo_id", "Use the form owner/name"),
        ({"repo_id": "acme/../etc"}, "repo_id", "Use the form owner/name"),
        ({"repo_id": "https://huggingface.co/acme/tiny"}, "repo_id", "Use the form owner/name"),
        ({"revision": "../main"}, "revision", "commit hash"),
        ({"revision": "main@{1}"}, "revision", "commit hash"),
        ({"revision": ""}, "revision", "may not be blank"),
        ({"task": ""}, "task", "is not a valid choice"),
        ({"memory_gb": 0}, "memory_gb", "greater than or equal to 1"),
        ({"name": "bad name"}, "name", "letters, digits"),
    ],
)
def test_bad_input_says_what_to_fix(tenants: Tenants, change: dict[str, object], field: str, says: str) -> None:
    response = session_api(tenants.member_a, tenants.org_a).post("/api/v1/models/", {**HUB_MODEL, **change}, format="json")
    assert response.status_code == 400, response.content
    assert says in " ".join(response.json()["error"]["fields"][field])
    assert not CatalogModel.objects.filter(organization=tenants.org_a).exists()


def test_a_missing_task_is_asked_for(tenants: Tenants) -> None:
    body = {key: value for key, value in HUB_MODEL.items() if key != "task"}
    response = session_api(tenants.member_a, tenants.org_a).post("/api/v1/models/", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["fields"]["task"] == ["This field is required."]


def test_the_console_registers_one_and_shows_errors_in_place(tenants: Tenants) -> None:
    console = session_api(tenants.member_a)
    url = f"/o/{tenants.org_a.slug}/models/"
    form = {f"hub-{key}": value for key, value in {**HUB_MODEL, "memory_gb": 1, "context_length": 4096}.items()}
    refused = console.post(url, {**form, "hub-repo_id": "no-owner"})
    assert refused.status_code == 400 and "Use the form owner/name" in refused.content.decode()
    registered = console.post(url, form, follow=True)
    html = registered.content.decode()
    assert "acme-chat is registered" in html and "acme/tiny-chat@main" in html
    assert CatalogModel.objects.get(organization=tenants.org_a, name="acme-chat").context_length == 4096
    assert session_api(tenants.viewer_a).post(url, form).status_code == 403


def test_deleting_a_hub_model_leaves_the_model_storage_alone(tenants: Tenants) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    model = api.post("/api/v1/models/", HUB_MODEL, format="json").json()
    stored = storages["models"].save("acme/tiny-chat/config.json", ContentFile(b"{}"))  # a path that looks like the repo id
    try:
        assert api.delete(f"/api/v1/models/{model['id']}/").status_code == 204
        assert storages["models"].exists(stored)
    finally:
        storages["models"].delete(stored)


def test_a_replica_is_asked_to_fetch_the_repo_at_its_revision(tenants: Tenants) -> None:
    session_api(tenants.member_a, tenants.org_a).post("/api/v1/models/", {**HUB_MODEL, "revision": "refs/pr/3"}, format="json")
    deployment = create_deployment(tenants.org_a, name="chatter", model="acme-chat")
    replica = Replica.objects.create(
        organization=tenants.org_a, deployment=deployment, revision=deployment.current_revision, cluster_id="local-us-east"
    )
    request = replica_request(replica)
    assert (request.artifact, request.task) == ("hf://acme/tiny-chat@refs/pr/3", "chat")


def test_the_agent_passes_a_repo_on_and_refuses_a_malformed_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[tuple[str, ...]] = []
    children: list[subprocess.Popen[bytes]] = []

    def start(model: str, *args: str, **kwargs: object) -> Started:
        commands.append((model, *args))
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return Started("http://127.0.0.1:9001", children[-1])

    monkeypatch.setattr("deployments.agent.start_model_server", start)
    app = build_agent_app("box", token=AGENT_TOKEN, model_cache_dir=tmp_path, state_file=tmp_path / "a.json")
    try:
        refused = _agent_create(app, artifact="hf://not-a-repo@main", task="chat")
        assert refused.status_code == 400 and "give hf://OWNER/NAME@REVISION" in refused.json()["error"]
        accepted = _agent_create(app, artifact="hf://acme/tiny-chat@main", task="chat")
        assert accepted.status_code == 201, accepted.text
        assert commands == [("acme-model", "--artifact", "hf://acme/tiny-chat@main", "--task", "chat")]
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_the_ray_host_passes_the_repo_to_the_builtin_server() -> None:
    spec = HostSpec(model="acme-chat", token="x", artifact="hf://acme/tiny-chat@main", task="chat")
    command = server_command(spec, host="10.0.0.1", port=9000)
    assert command[command.index("--artifact") + 1] == "hf://acme/tiny-chat@main" and command[command.index("--task") + 1] == "chat"


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local mirror holding acme/tiny-chat at revision main."""
    root = tmp_path / "mirror"
    (root / "acme" / "tiny-chat" / "main").mkdir(parents=True)
    for path, data in small_model_files().items():
        (root / "acme" / "tiny-chat" / "main" / path).write_bytes(data)
    monkeypatch.setenv(hub.MIRROR_VARIABLE, str(root))
    return root


def _spec(*argv: str):  # type: ignore[no-untyped-def]
    command = parser()
    return model_spec(command.parse_args(["--model", "acme-chat", *argv]), command)


def test_the_model_server_resolves_a_repo_from_the_mirror(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec("--artifact", "hf://acme/tiny-chat@main", "--task", "chat", "--cache-dir", str(tmp_path / "cache"))
    assert spec.source == str(mirror / "acme" / "tiny-chat" / "main") and spec.max_context == 128
    with pytest.raises(SystemExit):
        _spec("--artifact", "hf://acme/tiny-chat@v2", "--task", "chat")
    assert f"put the repo's files at {mirror / 'acme' / 'tiny-chat' / 'v2'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _spec("--artifact", "hf://acme@main", "--task", "chat")
    assert "give hf://OWNER/NAME@REVISION" in capsys.readouterr().err


def test_without_a_mirror_an_offline_machine_says_how_to_reach_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.MIRROR_VARIABLE, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.network_allowed()  # only an explicit 0 lets a replica reach the hub
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not hub.network_allowed()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the internet in tests
    with pytest.raises(hub.HubFetchError, match="Set HF_HUB_OFFLINE=0 where the cluster has network"):
        hub.fetch(hub.HubModel(repo_id="acme/tiny-chat", revision="main"), cache_dir=tmp_path, mirror=hub.mirror_dir())
    assert not any((tmp_path / "hub").glob("**/*.json"))
