"""A fresh install is production-shaped: no debug pages unless asked for, its own secrets
generated on first run (0600) and reused, the console's own error pages and the API's JSON
error shape for every failure, and `check --deploy` clean when served over HTTPS."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

from config import urls as console_urls
from config.secret_files import read_or_create
from config.urls import handler400, handler403, handler404, handler500  # noqa: F401 - this URLconf's handlers

CANARY = "canary-database-url-must-never-show"


def _manage(data_dir: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_") and key != "DATABASE_URL"}
    env.update({"SWITCHBOARD_NO_BOOTSTRAP": "1", "SWITCHBOARD_DATA_DIR": str(data_dir), **extra_env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120)


def test_a_fresh_install_generates_its_secrets_once_and_keeps_them(tmp_path: Path) -> None:
    show = "from django.conf import settings as s; print(s.DEBUG, s.SECRET_KEY, s.API_KEY_HMAC_SECRET, s.PROVIDER_KEY_SECRETS[0])"
    first = _manage(tmp_path, "shell", "-v", "0", "-c", show)
    assert first.returncode == 0, first.stderr
    debug, *secrets = first.stdout.split()
    assert debug == "False"  # debug pages only when asked for
    assert len(set(secrets)) == 3 and all(len(secret) >= 48 for secret in secrets)
    for name in ("django-secret-key", "api-key-secret", "provider-key-secret"):
        assert stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode) == 0o600
    again = _manage(tmp_path, "shell", "-v", "0", "-c", show)
    assert again.stdout.split()[1:] == secrets  # reused, so sessions and API keys survive a restart
    assert "switchboard-development-secret" not in first.stdout


def test_mail_goes_to_the_outbox_never_to_the_log(tmp_path: Path) -> None:
    send = "from django.core.mail import send_mail; send_mail('Reset', 'https://x.test/accounts/reset/SECRET-LINK/', None, ['a@b.test'])"
    result = _manage(tmp_path, "shell", "-v", "0", "-c", send)
    assert result.returncode == 0, result.stderr
    assert "SECRET-LINK" not in result.stdout + result.stderr
    [message] = list((tmp_path / "outbox").iterdir())
    assert "SECRET-LINK" in message.read_text()
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    with ProcessPoolExecutor(4) as pool:
        values = set(pool.map(read_or_create, [tmp_path / "secrets" / "shared"] * 16))
    assert len(values) == 1
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["shared"]  # no leftovers


def test_served_over_https_the_deploy_checks_pass(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", SWITCHBOARD_HTTPS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _fails(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(f"boom {CANARY}")


def _database_gone(request: HttpRequest) -> HttpResponse:
    raise OperationalError("server closed the connection unexpectedly")


urlpatterns = [
    path("api/v1/fails/", _fails),
    path("o/fails/", _fails),
    path("api/v1/database-gone/", _database_gone),
    path("o/database-gone/", _database_gone),
    *console_urls.urlpatterns,
]


@override_settings(ROOT_URLCONF=__name__, DEBUG=False)
@pytest.mark.django_db
def test_failures_answer_in_the_console_style_or_the_api_json_shape() -> None:
    client = Client(raise_request_exception=False)
    api = client.get("/api/v1/fails/")
    assert api.status_code == 500 and api["Content-Type"] == "application/json"
    assert api.json()["error"]["code"] == "internal_error" and api["X-Request-Id"]
    page = client.get("/o/fails/")
    assert page.status_code == 500 and "Something went wrong" in page.content.decode()
    for answer in (api, page):
        body = answer.content.decode()
        assert CANARY not in body and "Traceback" not in body and "DATABASE_URL" not in body
    missing = client.get("/api/v1/nothing-here/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    page_missing = client.get("/nothing-here/")
    assert page_missing.status_code == 404 and "URLconf" not in page_missing.content.decode()


@override_settings(ROOT_URLCONF=__name__, DEBUG=False)
@pytest.mark.django_db
def test_an_unreachable_database_answers_503_with_retry_after_not_500() -> None:
    client = Client(raise_request_exception=False)
    api = client.get("/api/v1/database-gone/")
    assert api.status_code == 503 and api["Retry-After"] == "5"
    assert api.json()["error"]["code"] == "service_unavailable" and "Retry in 5 seconds" in api.json()["error"]["message"]
    page = client.get("/o/database-gone/")
    assert page.status_code == 503 and page["Retry-After"] == "5" and "Back in a moment" in page.content.decode()
    assert "server closed" not in api.content.decode() + page.content.decode()
