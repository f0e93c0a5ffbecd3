"""On the embedded default, concurrent read-then-write transactions (a form save, an
invitation, a quota change) wait for each other instead of failing with "database is
locked": SQLite transactions begin IMMEDIATE, with a busy timeout (config/settings.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from tenancy.models import Organization
from tests.conftest import Tenants
from tests.servers import ROOT, child_env

pytestmark = pytest.mark.django_db(transaction=True)

THREADS, TRANSACTIONS = 6, 15


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite stack's locking")
def test_concurrent_read_then_write_transactions_all_commit(tenants: Tenants) -> None:
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def work(worker: int) -> None:
        try:
            start.wait()
            for index in range(TRANSACTIONS):
                with transaction.atomic():
                    organization = Organization.objects.get(pk=tenants.org_a.pk)  # read first: a shared lock under DEFERRED
                    organization.name = f"Acme {worker}-{index}"
                    organization.save(update_fields=["name"])  # then write
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert Organization.objects.get(pk=tenants.org_a.pk).name.startswith("Acme ")


CONCURRENT_COUNTER = """
import threading
from django.db import connection, connections, transaction
errors = []

def work():
    try:
        for _ in range(TRANSACTIONS):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT n FROM counter")
                (n,) = cursor.fetchone()
                cursor.execute("UPDATE counter SET n = %s", [n + 1])
    except Exception as error:
        errors.append(repr(error))
    finally:
        connections.close_all()

threads = [threading.Thread(target=work) for _ in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(120)
with connection.cursor() as cursor:
    cursor.execute("SELECT n FROM counter")
    print(cursor.fetchone()[0], sorted(set(errors)))
"""


def test_a_sqlite_database_url_gets_the_same_locking(tmp_path: Path) -> None:
    """`DATABASE_URL=sqlite:///…` (documented, and how the tests' server processes reach
    the test database) waits for the write lock as the embedded default does: read-then-
    write transactions from several connections all commit, none lost."""
    database = tmp_path / "url.sqlite3"
    with sqlite3.connect(database) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE counter (n INTEGER)")
        setup.execute("INSERT INTO counter VALUES (0)")
    script = f"THREADS, TRANSACTIONS = {THREADS}, {TRANSACTIONS}\n{CONCURRENT_COUNTER}"
    command = [sys.executable, "manage.py", "shell", "--no-imports", "-c", script]
    env = child_env(DATABASE_URL=f"sqlite:///{database}", SWITCHBOARD_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(THREADS * TRANSACTIONS), "[]"], result.stdout
