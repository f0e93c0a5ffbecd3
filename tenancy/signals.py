"""A membership that changes by any path (the services, the staff console, a deleted user
or organization, a plain queryset delete) tells that organization's open live pages, which
re-check at once who may still see them. A signal rather than a call in the services,
because cutting a removed member off must not depend on which path removed them."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from broadcast.groups import members_group
from broadcast.publish import publish_after_commit

MEMBERSHIP = "console.Membership"  # tenancy's app label (tenancy.apps)


def _membership_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    publish_after_commit(groups=[members_group(instance.organization_id)])


def connect() -> None:
    post_save.connect(_membership_changed, sender=MEMBERSHIP, dispatch_uid="tenancy.membership_saved")
    post_delete.connect(_membership_changed, sender=MEMBERSHIP, dispatch_uid="tenancy.membership_deleted")
