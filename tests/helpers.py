from __future__ import annotations

from rest_framework.test import APIClient

from tenancy.models import Organization, User


def session_api(user: User, org: Organization | None = None) -> APIClient:
    client = APIClient()
    client.force_login(user)
    if org is not None:
        client.credentials(HTTP_X_ORGANIZATION=org.slug)
    return client


def key_api(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client
