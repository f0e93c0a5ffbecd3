"""Celery tasks of the control plane: thin, idempotent, by id."""

from __future__ import annotations

from celery import shared_task

from deployments import canaries
from deployments import reconcile as loop
from deployments.drivers import DriverError


@shared_task(
    acks_late=True,
    time_limit=120,
    soft_time_limit=100,
    autoretry_for=(DriverError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def reconcile_deployment(deployment_id: str) -> str:
    result = loop.reconcile(deployment_id)
    return "skipped: another reconciler holds the lease" if result is None else result.status


FLEET_CHUNK = 500


@shared_task(acks_late=True, time_limit=300, soft_time_limit=280)
def reconcile_fleet(deployment_ids: list[str]) -> dict[str, int]:
    result = loop.reconcile_fleet(deployment_ids)
    return {"steady": result.steady, "reconciled": result.reconciled, "skipped": result.skipped}


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def reconcile_all() -> int:
    """Fanned out by beat every few seconds, in chunks that each take one batched pass."""
    ids = loop.deployments_to_reconcile()
    for start in range(0, len(ids), FLEET_CHUNK):
        reconcile_fleet.delay(ids[start : start + FLEET_CHUNK])
    return len(ids)


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def analyse_canaries() -> dict[str, str]:
    """By beat, as often as reconcile: each running canary judged, promoted or rolled back."""
    return canaries.analyse_running()
