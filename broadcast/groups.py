"""The channel-layer groups a change is published to, one name per kind of change."""

from __future__ import annotations

# The one message type every group carries; the consumer re-reads what it shows.
CHANGED = "live.changed"


def usage_group(organization_id: str) -> str:
    """New usage of an organization has been ingested (metering's ingester publishes)."""
    return f"usage.{organization_id}"


def deployment_group(deployment_id: str) -> str:
    """A deployment's status, revisions or replicas changed (the control plane publishes)."""
    return f"deployment.{deployment_id}"


def members_group(organization_id: str) -> str:
    """Someone joined or left an organization, or changed role (tenancy publishes)."""
    return f"members.{organization_id}"
