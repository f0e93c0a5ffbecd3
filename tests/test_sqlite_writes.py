"""On the embedded default, concurrent read-then-write transactions (a form save, an
invitation, a quota change) wait for each other instead of failing with "database is
locked": SQLite transactions begin IMMEDIATE, with a busy timeout (config/settings.py)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from tenancy.models import Organization
from tests.conftest import Tenants

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
