"""The deployment page's "Call this model" card: curl, Python and JavaScript calls of the
deployment by its gateway name at the gateway's /v1, for its model's task, with the API key
read from the environment. Each snippet is parsed by its own language's tools here; the
gateway end to end runs them for real (tests/gateway/test_call_snippets.py)."""

from __future__ import annotations

import ast
import html
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from django.template.loader import render_to_string
from django.test import Client

from console.snippets import API_KEY_VARIABLE, CallCard, call_snippets
from deployments.models import CatalogModel, DeploymentRevision
from tests.conftest import Tenants
from tests.factories import create_deployment, ensure_clusters

HOSTILE_NAME = "a\"b'c</code><script>x()</script>\\$(id)`id`"
HOSTILE_BASE = "http://example.test/v1?x='\"$(id)"


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _shown(page: str, language: str) -> str:
    """A snippet as the page shows it (and its copy button copies): the code element's text."""
    match = re.search(rf'<code id="call-{language}" data-testid="call-{language}">(.*?)</code></pre>', page, re.S)
    assert match is not None, f"no {language} snippet on the page"
    return html.unescape(match.group(1))


def _keyword(tree: ast.AST, call: str, name: str) -> object:
    """The literal value of keyword `name` in the call of `...<call>(...)` in a parsed snippet."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(call):
            for keyword in node.keywords:
                if keyword.arg == name:
                    return ast.literal_eval(keyword.value)
    raise AssertionError(f"no {call}({name}=...) in the snippet")


def test_a_chat_deployment_shows_chat_calls_by_its_name_at_the_gateway(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="support-bot")
    page = _client(tenants.viewer_a).get(f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/").content.decode()
    assert '<h2 id="call-title">Call this model</h2>' in page and "it serves chat and completions" in page
    python = _shown(page, "python")
    tree = ast.parse(python)
    assert _keyword(tree, "OpenAI", "base_url") == "http://testserver/v1"
    assert _keyword(tree, "chat.completions.create", "model") == "support-bot"
    assert _keyword(tree, "chat.completions.create", "messages") == [{"role": "user", "content": "Hello"}]
    assert f'api_key=os.environ["{API_KEY_VARIABLE}"]' in python
    curl = shlex.split(_shown(page, "curl").replace("\\\n", " "))
    assert curl[1] == "http://testserver/v1/chat/completions" and f"Authorization: Bearer ${API_KEY_VARIABLE}" in curl
    assert json.loads(curl[curl.index("-d") + 1]) == {"model": "support-bot", "messages": [{"role": "user", "content": "Hello"}]}
    javascript = _shown(page, "javascript")
    assert 'import OpenAI from "openai";' in javascript and "client.chat.completions.create({" in javascript
    assert 'baseURL: "http://testserver/v1"' in javascript and f"apiKey: process.env.{API_KEY_VARIABLE}" in javascript
    assert 'model: "support-bot"' in javascript
    assert "sbk_" not in page.split('data-testid="call"', 1)[1].split("</section>", 1)[0]  # never a key
    # The API keys page is linked; only those who may create keys are told to.
    admin_page = _client(tenants.admin_a).get(f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/").content.decode()
    assert "create one on the" in admin_page and "an admin or owner creates one" not in admin_page
    assert "an admin or owner creates one" in page and f'href="/o/{tenants.org_a.slug}/keys/"' in page


def test_an_embeddings_deployment_shows_embeddings_calls(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="search-vectors", model="tiny-embedding")
    page = _client(tenants.member_a).get(f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/").content.decode()
    assert "it serves embeddings" in page
    python = _shown(page, "python")
    assert _keyword(ast.parse(python), "embeddings.create", "model") == "search-vectors" and "chat" not in python
    curl = shlex.split(_shown(page, "curl").replace("\\\n", " "))
    assert curl[1] == "http://testserver/v1/embeddings"
    assert json.loads(curl[curl.index("-d") + 1]) == {"model": "search-vectors", "input": "Hello"}
    javascript = _shown(page, "javascript")
    assert 'client.embeddings.create({ model: "search-vectors", input: "Hello" })' in javascript and "chat" not in javascript


def test_the_task_is_the_organizations_own_model_of_that_name_not_another_tenants(tenants: Tenants) -> None:
    """An organization's registered model shadows the built-in one of its name, for it alone."""
    ensure_clusters()
    CatalogModel.objects.create(
        organization=tenants.org_a,
        name="tiny-chat",
        task=CatalogModel.Task.EMBEDDING,
        source_kind=CatalogModel.SourceKind.HUB,
        source="acme/tiny-embedder",
        revision="main",
        weights_format=CatalogModel.WeightsFormat.SAFETENSORS,
        context_length=512,
        embedding_dimensions=8,
    )
    ours = create_deployment(tenants.org_a, name="ours", model="tiny-chat")
    theirs = create_deployment(tenants.org_b, name="theirs", model="tiny-chat")
    assert "it serves embeddings" in _client(tenants.viewer_a).get(f"/o/{tenants.org_a.slug}/deployments/{ours.pk}/").content.decode()
    page_b = _client(tenants.viewer_b).get(f"/o/{tenants.org_b.slug}/deployments/{theirs.pk}/").content.decode()
    assert "it serves chat and completions" in page_b and "chat.completions.create" in _shown(page_b, "python")
    # A model the catalog no longer lists: the chat call, the common case.
    DeploymentRevision.objects.for_org(tenants.org_b).filter(deployment=theirs).update(model="gone")
    page_b = _client(tenants.viewer_b).get(f"/o/{tenants.org_b.slug}/deployments/{theirs.pk}/").content.decode()
    assert "chat.completions.create" in _shown(page_b, "python")


@pytest.mark.parametrize("task", [CatalogModel.Task.CHAT, CatalogModel.Task.EMBEDDING])
def test_each_snippet_parses_and_reads_back_any_name_and_url(task: str, tmp_path: Path) -> None:
    snippets = {snippet.language: snippet.code for snippet in call_snippets(model=HOSTILE_NAME, base_url=HOSTILE_BASE, task=task)}
    call = "embeddings.create" if task == CatalogModel.Task.EMBEDDING else "chat.completions.create"

    tree = ast.parse(snippets["python"])
    assert _keyword(tree, call, "model") == HOSTILE_NAME and _keyword(tree, "OpenAI", "base_url") == HOSTILE_BASE

    curl = shlex.split(snippets["curl"].replace("\\\n", " "))
    assert curl[1].startswith(HOSTILE_BASE + "/") and json.loads(curl[curl.index("-d") + 1])["model"] == HOSTILE_NAME
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", "-c", snippets["curl"]], check=True)

    node = shutil.which("node")
    assert node is not None, "Node.js is one of the project's prerequisites (README)"
    module = tmp_path / "call.mjs"  # an ES module: top-level await
    module.write_text(snippets["javascript"])
    subprocess.run([node, "--check", str(module)], check=True)
    # Run, with the import swapped for a recorder of what the snippet hands the SDK (no
    # openai npm package here, and no gateway: tests/gateway runs the others for real).
    recorder = (
        "class OpenAI { constructor(options) { this.options = options; const record = async (args) => {"
        " console.log(JSON.stringify({ options: this.options, args }));"
        " return { choices: [{ message: {} }], data: [{ embedding: [] }] }; };"
        " this.chat = { completions: { create: record } }; this.embeddings = { create: record }; } }"
    )
    assert snippets["javascript"].startswith('import OpenAI from "openai";\n')
    ran = subprocess.run(
        [node, "--input-type=module", "-e", snippets["javascript"].replace('import OpenAI from "openai";', recorder, 1)],
        check=True,
        capture_output=True,
        text=True,
        env={API_KEY_VARIABLE: "sbk_from_the_environment", "PATH": str(Path(node).parent)},
    )
    recorded = json.loads(ran.stdout.splitlines()[0])
    assert recorded["options"] == {"baseURL": HOSTILE_BASE, "apiKey": "sbk_from_the_environment"}
    assert recorded["args"]["model"] == HOSTILE_NAME


def test_the_card_escapes_what_it_shows() -> None:
    card = CallCard(
        model=HOSTILE_NAME,
        base_url=HOSTILE_BASE,
        task=CatalogModel.Task.CHAT,
        task_label="Chat and completions",
        snippets=call_snippets(model=HOSTILE_NAME, base_url=HOSTILE_BASE, task=CatalogModel.Task.CHAT),
    )
    rendered = render_to_string("deployments/_call.html", {"call": card, "org_ctx": {"organization": {"slug": "acme"}}})
    assert "<script>" not in rendered and "</code><script>" not in rendered
    assert "&lt;script&gt;x()&lt;/script&gt;" in rendered
    assert _keyword(ast.parse(_shown(rendered, "python")), "chat.completions.create", "model") == HOSTILE_NAME
