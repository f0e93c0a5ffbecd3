from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from tenancy.models import Organization, Role, User
from tenancy.network import OutboundPolicy
from tests.factories import MembershipFactory, OrganizationFactory

# The tests' backends stand in for providers and webhook receivers on loopback: the operator
# setting that lets tenants' URLs reach them, for the server processes the tests start
# (their environment) and for this process (the fixture below).
LOCAL_BACKENDS = "127.0.0.1"
os.environ["SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS"] = LOCAL_BACKENDS


@dataclass
class Tenants:
    """Organization A with one user of every role, and organization B with its own owner
    and viewer: the second tenant present in every test."""

    org_a: Organization
    owner_a: User
    admin_a: User
    member_a: User
    viewer_a: User
    org_b: Organization
    owner_b: User
    viewer_b: User

    def user(self, role: str, org: str = "a") -> User:
        return getattr(self, f"{role}_{org}")


def _member(org: Organization, role: Role) -> User:
    return MembershipFactory(organization=org, role=role).user


@pytest.fixture
def tenants(db: None) -> Tenants:
    org_a = OrganizationFactory(name="Acme", slug="acme")
    org_b = OrganizationFactory(name="Globex", slug="globex")
    return Tenants(
        org_a=org_a,
        owner_a=_member(org_a, Role.OWNER),
        admin_a=_member(org_a, Role.ADMIN),
        member_a=_member(org_a, Role.MEMBER),
        viewer_a=_member(org_a, Role.VIEWER),
        org_b=org_b,
        owner_b=_member(org_b, Role.OWNER),
        viewer_b=_member(org_b, Role.VIEWER),
    )


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture(autouse=True)
def _local_backends_allowed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.OUTBOUND_ALLOWED_HOSTS = [LOCAL_BACKENDS]
    settings.OUTBOUND_POLICY = OutboundPolicy.parse([LOCAL_BACKENDS])


@pytest.fixture(autouse=True)
def _model_storage(settings, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    # Uploaded model files go to a directory of this test session, not the data dir.
    location = tmp_path_factory.getbasetemp() / "model-storage"
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}},
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    # Production keeps Django's slow PBKDF2; tests only need passwords to round-trip.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def live_server_url(django_db_setup, django_db_blocker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The project's ASGI application under uvicorn, on the test database. Tests that
    use it need `transactional_db` so the server sees their rows."""
    from tests.servers import asgi_server, child_database_url, child_env, usage_ingester

    with django_db_blocker.unblock():
        database_url = child_database_url()
    with asgi_server(child_env(DATABASE_URL=database_url)) as url, usage_ingester(child_env(DATABASE_URL=database_url)):
        yield url
