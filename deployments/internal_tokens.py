"""Bearer tokens for the platform's internal surfaces, derived from one internal secret
(settings.INTERNAL_SECRET): each cluster agent's (the control plane calls it) and each
replica's (the control plane generates it when it creates the replica, the agent hands it
to the model server, the gateway and the autoscaler send it). Derived, not stored, so
every process of the platform computes the same token and nothing else can."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings


def _derive(purpose: str, name: str) -> str:
    return hmac.new(settings.INTERNAL_SECRET.encode(), f"{purpose}:{name}".encode(), hashlib.sha256).hexdigest()


def agent_token(cluster_name: str) -> str:
    return _derive("cluster-agent", cluster_name)


def replica_token(replica_id: str) -> str:
    return _derive("replica", replica_id)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
