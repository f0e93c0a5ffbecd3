"""The deployment page's "Call this model" card: curl, Python (the official `openai` SDK) and
JavaScript (the `openai` npm package) calling the deployment by its gateway name, the model
name on /v1, for the task its model does: chat completions or embeddings.

The key is never in a snippet: each reads it from the SWITCHBOARD_API_KEY environment
variable. The name and base URL are written as string literals of each language (JSON
string literals are both Python's and JavaScript's; curl's arguments are shell-quoted), so
a snippet stays correct whatever they hold; the template escapes them for HTML besides."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from deployments import model_catalog
from deployments.models import CatalogModel, Deployment
from tenancy.models import Organization

API_KEY_VARIABLE = "SWITCHBOARD_API_KEY"
PROMPT = "Hello"


@dataclass(frozen=True, slots=True)
class Snippet:
    language: str  # "curl", "python", "javascript": also its element's id and test id
    label: str
    code: str


@dataclass(frozen=True, slots=True)
class CallCard:
    model: str
    base_url: str
    task: str
    task_label: str
    snippets: list[Snippet]


def _literal(text: str) -> str:
    """A string literal that Python and JavaScript read back as `text`."""
    return json.dumps(text)


def _curl(*, model: str, base_url: str, task: str) -> str:
    body: dict[str, object]
    if task == CatalogModel.Task.EMBEDDING:
        path, body = "/embeddings", {"model": model, "input": PROMPT}
    else:
        path, body = "/chat/completions", {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    return (
        f"curl {shlex.quote(base_url + path)} \\\n"
        f'  -H "Authorization: Bearer ${API_KEY_VARIABLE}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(json.dumps(body))}"
    )


def _python(*, model: str, base_url: str, task: str) -> str:
    head = (
        "import os\n\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url={_literal(base_url)}, api_key=os.environ["{API_KEY_VARIABLE}"])\n'
    )
    if task == CatalogModel.Task.EMBEDDING:
        return head + (
            f"response = client.embeddings.create(model={_literal(model)}, input={_literal(PROMPT)})\n"
            "print(len(response.data[0].embedding))"
        )
    return head + (
        "completion = client.chat.completions.create(\n"
        f"    model={_literal(model)},\n"
        f'    messages=[{{"role": "user", "content": {_literal(PROMPT)}}}],\n'
        ")\n"
        "print(completion.choices[0].message.content)"
    )


def _javascript(*, model: str, base_url: str, task: str) -> str:
    head = (
        'import OpenAI from "openai";\n\n'
        f"const client = new OpenAI({{ baseURL: {_literal(base_url)}, apiKey: process.env.{API_KEY_VARIABLE} }});\n"
    )
    if task == CatalogModel.Task.EMBEDDING:
        return head + (
            f"const response = await client.embeddings.create({{ model: {_literal(model)}, input: {_literal(PROMPT)} }});\n"
            "console.log(response.data[0].embedding.length);"
        )
    return head + (
        "const completion = await client.chat.completions.create({\n"
        f"  model: {_literal(model)},\n"
        f'  messages: [{{ role: "user", content: {_literal(PROMPT)} }}],\n'
        "});\n"
        "console.log(completion.choices[0].message.content);"
    )


def call_snippets(*, model: str, base_url: str, task: str) -> list[Snippet]:
    """curl, Python and JavaScript calls of `model` at `base_url` (the gateway's /v1)."""
    options = {"model": model, "base_url": base_url.rstrip("/"), "task": task}
    return [
        Snippet("curl", "curl", _curl(**options)),
        Snippet("python", "Python (openai)", _python(**options)),
        Snippet("javascript", "JavaScript (openai, ES module)", _javascript(**options)),
    ]


def call_card(org: Organization, deployment: Deployment, *, base_url: str) -> CallCard:
    """The card for the deployment's current revision: its model's task decides the call
    (chat where the catalog no longer lists the model)."""
    entry = model_catalog.entry(org, deployment.revision.model)
    task = CatalogModel.Task(entry.task) if entry is not None else CatalogModel.Task.CHAT
    return CallCard(
        model=deployment.name,
        base_url=base_url.rstrip("/"),
        task=task.value,
        task_label=task.label,
        snippets=call_snippets(model=deployment.name, base_url=base_url, task=task.value),
    )
