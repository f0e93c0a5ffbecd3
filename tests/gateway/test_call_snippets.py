"""The deployment page's "Call this model" snippets, run as a user would run them: the page
fetched from the running server, the curl and Python (official openai SDK) snippets copied
from it and run against its gateway with a real API key in SWITCHBOARD_API_KEY, for a chat
and an embeddings deployment whose replicas are benchmark backends."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys

import httpx
import pytest
from django.test import Client

from console.snippets import API_KEY_VARIABLE
from deployments.models import Quota
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import deployment_with_replicas

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _snippets(gateway: str, user, path: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    page = httpx.get(gateway + path, cookies={"sessionid": client.cookies["sessionid"].value}, timeout=30).text
    found = dict(re.findall(r'<code id="call-(\w+)" data-testid="call-\w+">(.*?)</code></pre>', page, re.S))
    return {language: html.unescape(code) for language, code in found.items()}


def _run(command: list[str], key: str) -> str:
    env = {**os.environ, API_KEY_VARIABLE: key}
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def test_the_pages_snippets_call_the_deployment_through_the_gateway(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    endpoints = [(backends[0].url, "local-us-east")]
    Quota.objects.create(organization=tenants.org_a, max_replicas=8, gpus={"CPU": 8})  # two deployments of up to 4 replicas
    chat = deployment_with_replicas(tenants.org_a, "support-bot", endpoints)
    vectors = deployment_with_replicas(tenants.org_a, "search-vectors", endpoints, model="tiny-embedding")
    key = issue_key(tenants.org_a, ["inference"]).plaintext
    bash = shutil.which("bash")
    assert bash is not None

    shown = _snippets(gateway, tenants.viewer_a, f"/o/{tenants.org_a.slug}/deployments/{chat.pk}/")
    assert set(shown) == {"curl", "python", "javascript"} and key not in "".join(shown.values())
    assert _run([sys.executable, "-c", shown["python"]], key) == "Hello from the benchmark backend."
    answer = json.loads(_run([bash, "-c", shown["curl"] + " --silent --fail-with-body"], key))
    assert answer["choices"][0]["message"]["content"] == "Hello from the benchmark backend."

    shown = _snippets(gateway, tenants.viewer_a, f"/o/{tenants.org_a.slug}/deployments/{vectors.pk}/")
    assert _run([sys.executable, "-c", shown["python"]], key) == "8"  # the backend's embedding dimensions
    answer = json.loads(_run([bash, "-c", shown["curl"] + " --silent --fail-with-body"], key))
    assert answer["object"] == "list" and len(answer["data"][0]["embedding"]) == 8

    # Without the key in the environment the call is refused: the snippet carries none.
    refused = subprocess.run([bash, "-c", shown["curl"] + " --silent"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert json.loads(refused.stdout)["error"]["code"] == "invalid_authorization_header"  # "Bearer " and nothing
