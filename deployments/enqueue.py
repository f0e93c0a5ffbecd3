"""Asking the control plane to reconcile now rather than at beat's next pass: for a
request waiting at zero replicas, and for deployments a cluster change moved."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from deployments.models import Deployment
from deployments.tasks import reconcile_deployment

log = logging.getLogger("switchboard.controlplane")


def request_scale_from_zero(*, deployment_id: str) -> None:
    """For the gateway: a request arrived for a deployment with no READY replica. Marks
    the demand and reconciles after the commit, so a replica is placed without waiting
    for beat."""
    Deployment.objects.unscoped_across_tenants().filter(pk=deployment_id).update(wake_requested_at=timezone.now())
    transaction.on_commit(lambda: reconcile_deployment.delay(deployment_id))


def reconcile_soon(*, deployment_ids: list[str]) -> None:
    """Reconciles these deployments after the commit. If the broker is down, beat's next
    pass does it."""

    def enqueue() -> None:
        try:
            for deployment_id in deployment_ids:
                reconcile_deployment.delay(deployment_id)
        except Exception:  # noqa: BLE001 - any broker failure: beat's next pass covers it
            log.warning("could not enqueue reconcile passes for %d deployment(s); beat will run them", len(deployment_ids), exc_info=True)

    transaction.on_commit(enqueue)
