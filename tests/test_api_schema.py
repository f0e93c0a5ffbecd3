from __future__ import annotations

import os
import re
import subprocess
import sys

from django.conf import settings
from django.test import Client

from tests.conftest import Tenants


def test_openapi_schema_generates_without_warnings() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SWITCHBOARD_NO_BOOTSTRAP": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "/api/v1/keys/{key_id}/rotate/" in result.stdout


def test_docs_page_serves_assets_locally(db: None) -> None:
    page = Client().get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "https://" not in html and "//cdn" not in html.lower()
    # Every script and stylesheet comes from this server. (Not a plain "cdn" search: the
    # page embeds a random CSRF token, which once contained those three letters.)
    assets = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert assets and all(asset.startswith("/") for asset in assets), assets


def test_a_browser_visiting_the_api_gets_json(tenants: Tenants) -> None:
    client = Client()
    client.force_login(tenants.owner_a)
    for url in ("/api/v1/organization/", "/api/v1/keys/", "/api/v1/members/", "/api/v1/audit-log/"):
        response = client.get(url, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8", HTTP_X_ORGANIZATION=tenants.org_a.slug)
        assert response.status_code == 200, url
        assert response["Content-Type"] == "application/json"
    response = client.get("/api/v1/keys/", HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response.json()["error"]["code"] == "not_acceptable"
