"""Celery tasks of the control plane: thin, idempotent, by id."""

from __future__ import annotations

from celery import shared_task

from deployments import reconcile as loop
from deployments.drivers import DriverError


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100, autoretry_for=(DriverError,), retry_backoff=True, retry_backoff_max=60, max_retries=5)
def reconcile_deployment(deployment_id: str) -> str:
    result = loop.reconcile(deployment_id)
    return "skipped: another reconciler holds the lease" if result is None else result.status


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def reconcile_all() -> int:
    """Fanned out by beat every few seconds: one task per deployment that needs a look."""
    ids = loop.deployments_to_reconcile()
    for deployment_id in ids:
        reconcile_deployment.delay(deployment_id)
    return len(ids)
