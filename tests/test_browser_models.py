"""Uploading a model directory from the console's Models page in a real browser
(Playwright, Debian Chromium) against the ASGI server: the page's script hashes each file,
sends it in chunks through the management API with the console session, resumes when an
answer is lost on the way, and shows the API's own words when the directory is refused."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Route
from transformers import AutoTokenizer

from deployments.models import CatalogModel, ModelUpload, ModelUploadFile
from tests.browser import UNLABELLED_CONTROLS_JS, chromium
from tests.conftest import Tenants
from tests.tiny_models import save_tiny_llama, tokenizer_dir

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_upload_a_model_directory_in_the_browser(live_server_url: str, tenants: Tenants, tmp_path: Path) -> None:
    directory = save_tiny_llama(tmp_path / "tiny-chat", AutoTokenizer.from_pretrained(tokenizer_dir()))
    (directory / ".DS_Store").write_bytes(b"left out")
    weights_size = (directory / "model.safetensors").stat().st_size
    assert weights_size > 2 * settings.MAX_REQUEST_BODY_BYTES  # several chunks
    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    (broken / "config.json").write_bytes((directory / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes()[:1000])

    orm = ThreadPoolExecutor(1)  # ORM work off Playwright's thread (it runs an event loop)
    session = orm.submit(_session_cookie, tenants.member_a).result()
    lost: list[str] = []

    def lose_one_answer(route: Route) -> None:
        """The second chunk of the weights reaches the server, but its answer is lost."""
        if "model.safetensors?offset=" in route.request.url and not route.request.url.endswith("offset=0") and not lost:
            lost.append(route.request.url)
            route.fetch()
            route.abort("connectionreset")
            return
        route.continue_()

    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server_url}])
        page = context.new_page()
        page.route(re.compile(r".*/api/v1/models/uploads/.*/files/.*"), lose_one_answer)
        page.goto(f"{live_server_url}/o/{tenants.org_a.slug}/models/")
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        assert page.get_by_test_id("model-row").count() == 0

        # A directory the registry refuses: the page shows the API's words, problem by problem.
        upload_form = page.locator("#model-upload")
        upload_form.get_by_label("Name").fill("broken")
        upload_form.get_by_label("Model directory").set_input_files(broken)
        upload_form.get_by_role("button", name="Upload").click()
        errors = page.get_by_test_id("upload-errors")
        errors.filter(has_text="The model cannot be registered").wait_for()
        assert "tokenizer" in errors.inner_text() and "safetensors" in errors.inner_text()

        upload_form.get_by_label("Name").fill("acme-chat")
        upload_form.get_by_label("Model directory").set_input_files(directory)
        upload_form.get_by_label("Licence").fill("apache-2.0")
        upload_form.get_by_role("button", name="Upload").click()
        page.get_by_test_id("model-row").filter(has_text="acme-chat").wait_for(timeout=60_000)
        assert len(lost) == 1
        row = page.get_by_test_id("model-row").filter(has_text="acme-chat").inner_text()
        assert "Chat and completions" in row and "no deployment" in row
        assert page.get_by_test_id("unfinished-upload").filter(has_text="broken").inner_text().count("Failed validation") == 1

    model = orm.submit(lambda: CatalogModel.objects.get(organization=tenants.org_a, name="acme-chat")).result()
    assert model.license == "apache-2.0" and model.task == "chat"
    upload = orm.submit(lambda: ModelUpload.objects.for_org(tenants.org_a).get(model=model)).result()
    paths = orm.submit(
        lambda: sorted(ModelUploadFile.objects.for_org(tenants.org_a).filter(upload=upload).values_list("path", flat=True))
    ).result()
    assert ".DS_Store" not in paths and "model.safetensors" in paths and "config.json" in paths
    orm.shutdown()


def test_an_interrupted_upload_resumes_after_a_reload(live_server_url: str, tenants: Tenants, tmp_path: Path) -> None:
    directory = save_tiny_llama(tmp_path / "tiny-chat", AutoTokenizer.from_pretrained(tokenizer_dir()))
    orm = ThreadPoolExecutor(1)
    session = orm.submit(_session_cookie, tenants.member_a).result()
    network_down = [True]
    weights_sent: list[str] = []

    def after_the_first_chunk_the_network_fails(route: Route) -> None:
        url = route.request.url
        if "model.safetensors?offset=" in url:
            weights_sent.append(url.rsplit("offset=", 1)[1])
            if network_down[0] and not url.endswith("offset=0"):
                route.abort("connectionreset")
                return
        route.continue_()

    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server_url}])
        page = context.new_page()
        page.route(re.compile(r".*/api/v1/models/uploads/.*/files/.*"), after_the_first_chunk_the_network_fails)
        page.goto(f"{live_server_url}/o/{tenants.org_a.slug}/models/")
        upload_form = page.locator("#model-upload")
        upload_form.get_by_label("Name").fill("acme-chat")
        upload_form.get_by_label("Model directory").set_input_files(directory)
        upload_form.get_by_role("button", name="Upload").click()
        page.get_by_test_id("upload-errors").filter(has_text="upload again to resume").wait_for(timeout=60_000)
        assert weights_sent.count("0") == 1 and len(weights_sent) == 7  # the first chunk, then one try and five retries

        network_down[0] = False
        page.reload()
        assert "Open" in page.get_by_test_id("unfinished-upload").filter(has_text="acme-chat").inner_text()
        upload_form = page.locator("#model-upload")
        upload_form.get_by_label("Name").fill("acme-chat")
        upload_form.get_by_label("Model directory").set_input_files(directory)
        upload_form.get_by_role("button", name="Upload").click()
        page.get_by_test_id("model-row").filter(has_text="acme-chat").wait_for(timeout=60_000)
        assert weights_sent.count("0") == 1  # resumed where the server had it, not sent again from the start

    uploads = orm.submit(lambda: list(ModelUpload.objects.for_org(tenants.org_a).filter(name="acme-chat"))).result()
    assert len(uploads) == 1 and uploads[0].status == ModelUpload.Status.COMPLETE
    orm.shutdown()
