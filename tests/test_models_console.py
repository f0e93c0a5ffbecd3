"""The console's Models page: the organization's registered models with their size and
the deployments that use them, deleting (refused while in use), unfinished uploads with
their problems, and the management API answering the page's script with the console
session and its CSRF token. The upload itself in a real browser: tests/test_browser_models.py."""

from __future__ import annotations

import hashlib
import re

from django.test import Client

from deployments import uploads
from deployments.models import CatalogModel
from tests.conftest import Tenants
from tests.factories import create_deployment, owner_context, register_model, small_model_files, start_model_upload


def _console(user, *, enforce_csrf_checks: bool = False) -> Client:  # type: ignore[no-untyped-def]
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(user)
    return client


def test_the_page_lists_the_organizations_own_models_with_size_and_users(tenants: Tenants) -> None:
    ours = register_model(tenants.org_a, "acme-chat")
    register_model(tenants.org_b, "globex-secret")
    create_deployment(tenants.org_a, name="chatter", model="acme-chat")
    page = _console(tenants.member_a).get(f"/o/{tenants.org_a.slug}/models/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "acme-chat" in html and "globex-secret" not in html and "chatter" in html
    size = sum(len(data) for data in small_model_files().values())
    assert f"{size}\xa0bytes" in html or f"{size} bytes" in html
    assert "webkitdirectory" in html and "deployments/model-upload.js" in html
    assert f'action="/o/{tenants.org_a.slug}/models/{ours.id}/delete/"' in html
    assert 'href="/o/acme/models/" aria-current="page"' in html  # in the console's navigation


def test_a_viewer_sees_the_list_but_no_upload_or_delete(tenants: Tenants) -> None:
    model = register_model(tenants.org_a, "acme-chat")
    viewer = _console(tenants.viewer_a)
    html = viewer.get(f"/o/{tenants.org_a.slug}/models/").content.decode()
    assert "acme-chat" in html and "webkitdirectory" not in html and "/delete/" not in html
    assert viewer.post(f"/o/{tenants.org_a.slug}/models/{model.id}/delete/").status_code == 403
    assert CatalogModel.objects.filter(pk=model.pk).exists()


def test_a_foreign_model_is_404_and_stays(tenants: Tenants) -> None:
    theirs = register_model(tenants.org_b, "globex-secret")
    owner_a = _console(tenants.owner_a)
    assert owner_a.post(f"/o/{tenants.org_a.slug}/models/{theirs.id}/delete/").status_code == 404
    assert owner_a.post(f"/o/{tenants.org_b.slug}/models/{theirs.id}/delete/").status_code == 404  # not a member there
    assert CatalogModel.objects.filter(pk=theirs.pk).exists()


def test_deleting_a_model_in_use_is_refused_with_the_reason(tenants: Tenants) -> None:
    model = register_model(tenants.org_a, "acme-chat")
    deployment = create_deployment(tenants.org_a, name="chatter", model="acme-chat")
    member = _console(tenants.member_a)
    answer = member.post(f"/o/{tenants.org_a.slug}/models/{model.id}/delete/", follow=True)
    assert f"Deployment(s) chatter ({deployment.id}) use acme-chat" in answer.content.decode()
    assert CatalogModel.objects.filter(pk=model.pk).exists()
    unused = register_model(tenants.org_a, "acme-spare")
    answer = member.post(f"/o/{tenants.org_a.slug}/models/{unused.id}/delete/", follow=True)
    assert "acme-spare was deleted" in answer.content.decode()
    assert not CatalogModel.objects.filter(pk=unused.pk).exists()


def test_a_failed_upload_shows_its_problems(tenants: Tenants) -> None:
    files = small_model_files()
    del files["tokenizer.json"]
    upload = start_model_upload(tenants.org_a, "broken", files)
    try:
        uploads.complete_upload(owner_context(tenants.org_a), upload)
    except uploads.Unprocessable:
        pass
    html = _console(tenants.member_a).get(f"/o/{tenants.org_a.slug}/models/").content.decode()
    assert "broken" in html and "Failed validation" in html and "tokenizer" in html


def test_the_page_script_calls_the_api_with_the_session_and_csrf_token(tenants: Tenants) -> None:
    member = _console(tenants.member_a, enforce_csrf_checks=True)
    html = member.get(f"/o/{tenants.org_a.slug}/models/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token is not None
    data = b"{}"
    body = {"name": "acme-chat", "files": [{"path": "config.json", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    headers = {"HTTP_X_ORGANIZATION": tenants.org_a.slug}
    refused = member.post("/api/v1/models/uploads/", body, content_type="application/json", **headers)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    started = member.post("/api/v1/models/uploads/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token.group(1), **headers)
    assert started.status_code == 201, started.content
    # The viewer's session is refused by the API as by the page.
    viewer = _console(tenants.viewer_a)
    answer = viewer.post("/api/v1/models/uploads/", body, content_type="application/json", **headers)
    assert answer.status_code == 403 and "Your role (viewer)" in answer.json()["error"]["message"]
