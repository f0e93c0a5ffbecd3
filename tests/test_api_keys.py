from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing.models import ModelPrice
from billing.rating import month_start
from metering import ingest
from routing.gateway.snapshot import load_snapshot
from tenancy import keys, services
from tenancy.models import ApiKey
from tests.conftest import Tenants
from tests.factories import issue_key, owner_context
from tests.helpers import key_api, session_api
from tests.metering.test_usage_pipeline import _record


def test_a_key_authenticates_only_its_own_organization(tenants: Tenants) -> None:
    issued_a = issue_key(tenants.org_a, ["read"])
    issue_key(tenants.org_b, ["read"], name="globex key")
    response = key_api(issued_a.plaintext).get("/api/v1/keys/")
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [issued_a.api_key.id]
    org = key_api(issued_a.plaintext).get("/api/v1/organization/").json()
    assert org["id"] == tenants.org_a.id
    # The organization header cannot move a key into another tenant.
    client = key_api(issued_a.plaintext)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_a.plaintext}", HTTP_X_ORGANIZATION=tenants.org_b.slug)
    assert client.get("/api/v1/organization/").json()["id"] == tenants.org_a.id


def _error(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def test_revoked_key_gets_401_with_a_clear_message(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["read"])
    services.revoke_api_key(owner_context(tenants.org_a), issued.api_key)
    response = key_api(issued.plaintext).get("/api/v1/organization/")
    assert response.status_code == 401
    assert _error(response)["code"] == "revoked_api_key"
    assert "revoked" in _error(response)["message"]


def test_expired_key_gets_401_with_a_clear_message(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["read"], expires_at=timezone.now() + timedelta(minutes=5))
    ApiKey.objects.for_org(tenants.org_a).filter(pk=issued.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = key_api(issued.plaintext).get("/api/v1/organization/")
    assert response.status_code == 401
    assert _error(response)["code"] == "expired_api_key"
    assert "expired" in _error(response)["message"]


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-key", "Bearer sbk_short_abc", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer sbk_" + "a" * 12 + "_" + "b" * 39 + "!"],
)
def test_malformed_keys_get_401(tenants: Tenants, api_client, header: str) -> None:  # type: ignore[no-untyped-def]
    api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/api/v1/organization/")
    assert response.status_code == 401
    assert _error(response)["code"] in {"malformed_api_key", "malformed_authorization"}
    assert "Bearer" in _error(response)["message"] or "Malformed" in _error(response)["message"]


def test_well_formed_unknown_or_tampered_key_gets_401(tenants: Tenants, api_client) -> None:  # type: ignore[no-untyped-def]
    issued = issue_key(tenants.org_a, ["read"])
    tampered = issued.plaintext[:-1] + ("A" if issued.plaintext[-1] != "A" else "B")
    for candidate in (tampered, "sbk_" + "Z" * 12 + "_" + "Y" * 40):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {candidate}")
        response = api_client.get("/api/v1/organization/")
        assert response.status_code == 401
        assert _error(response)["code"] == "invalid_api_key"


def test_read_key_gets_403_on_writes(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["read"])
    client = key_api(issued.plaintext)
    response = client.post("/api/v1/keys/", {"name": "x", "scopes": ["read"]}, format="json")
    assert response.status_code == 403
    assert "write" in _error(response)["message"]
    assert client.patch("/api/v1/organization/", {"name": "Renamed"}, format="json").status_code == 403
    assert ApiKey.objects.for_org(tenants.org_a).count() == 1


def test_inference_only_key_cannot_read_management_api(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["inference"])
    response = key_api(issued.plaintext).get("/api/v1/keys/")
    assert response.status_code == 403
    assert "read" in _error(response)["message"]


def test_plain_secret_is_never_stored(tenants: Tenants) -> None:
    response = session_api(tenants.owner_a, tenants.org_a).post("/api/v1/keys/", {"name": "ci", "scopes": ["inference"]}, format="json")
    assert response.status_code == 201
    plaintext = response.json()["key"]
    secret_part = plaintext.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM console_apikey WHERE id = %s", [response.json()["id"]])
        row = cursor.fetchone()
        cursor.execute("SELECT before, after FROM console_auditentry WHERE target_id = %s", [response.json()["id"]])
        audit_rows = cursor.fetchall()
    flattened = " ".join(str(value) for value in row) + " ".join(str(value) for value in audit_rows)
    assert plaintext not in flattened
    assert secret_part not in flattened
    stored = ApiKey.objects.for_org(tenants.org_a).get(pk=response.json()["id"])
    assert stored.secret_hash == keys.hash_key(plaintext) and len(stored.secret_hash) == 64
    # The secret is in the creation response only.
    listed = session_api(tenants.owner_a, tenants.org_a).get(f"/api/v1/keys/{stored.id}/").json()
    assert "key" not in listed and listed["prefix"] == f"sbk_{stored.prefix}"


def test_last_used_is_recorded(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["read"])
    assert issued.api_key.last_used_at is None
    key_api(issued.plaintext).get("/api/v1/organization/")
    issued.api_key.refresh_from_db()
    assert issued.api_key.last_used_at is not None


def test_rotation_keeps_the_old_key_working_for_the_grace_period(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["read", "write"])
    client = key_api(issued.plaintext)
    response = client.post(f"/api/v1/keys/{issued.api_key.id}/rotate/")
    assert response.status_code == 201
    new_plaintext = response.json()["key"]
    assert response.json()["rotated_from"] == issued.api_key.id
    assert key_api(new_plaintext).get("/api/v1/organization/").status_code == 200
    assert key_api(issued.plaintext).get("/api/v1/organization/").status_code == 200  # within grace
    old = ApiKey.objects.for_org(tenants.org_a).get(pk=issued.api_key.id)
    assert old.expires_at is not None and old.expires_at <= timezone.now() + timedelta(hours=24, seconds=5)
    ApiKey.objects.for_org(tenants.org_a).filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert key_api(issued.plaintext).get("/api/v1/organization/").status_code == 401
    assert key_api(new_plaintext).get("/api/v1/organization/").status_code == 200
    # A rotated key cannot be rotated again; its replacement can.
    assert key_api(new_plaintext).post(f"/api/v1/keys/{old.id}/rotate/").status_code == 409


def test_revocation_through_the_api(tenants: Tenants) -> None:
    issued = issue_key(tenants.org_a, ["read", "write"])
    other = issue_key(tenants.org_a, ["read"], name="other")
    response = key_api(issued.plaintext).delete(f"/api/v1/keys/{other.api_key.id}/")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert key_api(other.plaintext).get("/api/v1/organization/").status_code == 401
    assert key_api(issued.plaintext).delete(f"/api/v1/keys/{other.api_key.id}/").status_code == 409


def test_a_key_made_in_the_console_is_shown_once_and_never_stored_in_the_session(tenants: Tenants) -> None:
    client = Client()
    client.force_login(tenants.admin_a)
    url = f"/o/{tenants.org_a.slug}/keys/"
    created = client.post(url, {"name": "laptop", "scopes": "inference"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    plaintext = created.context["new_secret"]["key"]
    assert plaintext in created.content.decode()
    secret_part = plaintext.rsplit("_", 1)[1]
    for session in Session.objects.all():
        assert secret_part not in str(session.get_decoded()) and secret_part not in session.session_data
    again = client.get(url).content.decode()
    assert secret_part not in again  # shown once
    rotated = client.post(f"{url}{ApiKey.objects.for_org(tenants.org_a).get(name='laptop').pk}/rotate/")
    new_plaintext = rotated.context["new_secret"]["key"]
    assert new_plaintext != plaintext and all(new_plaintext.rsplit("_", 1)[1] not in s.session_data for s in Session.objects.all())


def test_a_key_can_be_limited_to_some_models_through_the_api(tenants: Tenants) -> None:
    api = session_api(tenants.admin_a, tenants.org_a)
    created = api.post("/api/v1/keys/", {"name": "chat only", "scopes": ["inference"], "allowed_models": ["chat", "chat"]}, format="json")
    assert created.status_code == 201 and created.json()["allowed_models"] == ["chat"]
    key_id = created.json()["id"]
    changed = api.patch(f"/api/v1/keys/{key_id}/", {"allowed_models": ["chat", "embed"]}, format="json")
    assert changed.status_code == 200 and changed.json()["allowed_models"] == ["chat", "embed"]
    assert ApiKey.objects.for_org(tenants.org_a).get(pk=key_id).allowed_models == ["chat", "embed"]
    bad = api.patch(f"/api/v1/keys/{key_id}/", {"allowed_models": ["chat\r\nx"]}, format="json")
    assert bad.status_code == 400 and "allowed_models" in bad.json()["error"]["fields"]
    assert api.patch(f"/api/v1/keys/{key_id}/", {}, format="json").status_code == 400
    # Another tenant's admin cannot touch it.
    other = session_api(tenants.owner_b, tenants.org_b)
    assert other.patch(f"/api/v1/keys/{key_id}/", {"allowed_models": []}, format="json").status_code == 404


def test_a_key_gets_a_monthly_budget_that_only_money_roles_see(tenants: Tenants) -> None:
    admin = session_api(tenants.admin_a, tenants.org_a)
    created = admin.post("/api/v1/keys/", {"name": "capped", "scopes": ["inference"], "monthly_budget": "25.00"}, format="json")
    assert created.status_code == 201 and created.json()["monthly_budget"] == "25.00"
    key_id = created.json()["id"]
    assert admin.patch(f"/api/v1/keys/{key_id}/", {"monthly_budget": "0"}, format="json").status_code == 400
    lifted = admin.patch(f"/api/v1/keys/{key_id}/", {"monthly_budget": None}, format="json")
    assert lifted.status_code == 200 and lifted.json()["monthly_budget"] is None
    admin.patch(f"/api/v1/keys/{key_id}/", {"monthly_budget": "30"}, format="json")
    listed = session_api(tenants.viewer_a, tenants.org_a).get(f"/api/v1/keys/{key_id}/").json()
    assert "monthly_budget" not in listed  # a viewer sees the key, not its money


def test_the_console_creates_a_key_limited_to_models_with_a_budget_and_hides_the_money_from_viewers(tenants: Tenants) -> None:
    admin = Client()
    admin.force_login(tenants.admin_a)
    page = admin.post(
        "/o/acme/keys/", {"name": "batch job", "scopes": ["inference"], "allowed_models": "chat, embed ,", "monthly_budget": "12.50"}
    )
    assert page.status_code == 200 and 'data-testid="key-budget"' in page.content.decode()
    key = ApiKey.objects.for_org(tenants.org_a).get(name="batch job")
    assert key.allowed_models == ["chat", "embed"] and str(key.monthly_budget) == "12.50"
    viewer = Client()
    viewer.force_login(tenants.viewer_a)
    listing = viewer.get("/o/acme/keys/").content.decode()
    assert "only chat, embed" in listing and "$12.50" not in listing and 'data-testid="key-budget"' not in listing


def test_rotating_a_key_keeps_its_models_and_budget_and_never_resets_its_spend(tenants: Tenants) -> None:
    ctx = owner_context(tenants.org_a)
    issued = services.create_api_key(ctx, name="capped", scopes=["inference"], allowed_models=["chat"], monthly_budget=Decimal("5"))
    ModelPrice.objects.create(
        model="chat", input_price_per_mtok=Decimal(1), output_price_per_mtok=Decimal(1), effective_from=timezone.now() - timedelta(days=40)
    )
    at = max(timezone.now() - timedelta(minutes=3), month_start(timezone.now()))  # this month, even just after it began
    ingest.write_batch(
        [_record(tenants.org_a.pk, "r1", at=at, key_id=issued.api_key.pk, model="chat", input_tokens=10**6, output_tokens=10**6)]
    )
    replacement = services.rotate_api_key(ctx, issued.api_key).api_key
    assert replacement.allowed_models == ["chat"] and replacement.monthly_budget == Decimal("5")
    policy = load_snapshot(tenants.org_a.pk).spend
    assert policy is not None
    old, new = policy.keys[issued.api_key.pk], policy.keys[replacement.pk]
    assert old is new and new.spent_micros == 2_000_000  # $2 spent before the rotation still counts
    assert load_snapshot(tenants.org_b.pk).spend is None  # the other tenant has no limits


def test_an_admin_changes_a_keys_models_and_budget_in_the_console_after_creating_it(tenants: Tenants) -> None:
    ctx = owner_context(tenants.org_a)
    key = services.create_api_key(ctx, name="backend", scopes=["inference"]).api_key
    other = services.create_api_key(owner_context(tenants.org_b), name="theirs", scopes=["inference"]).api_key
    admin = Client()
    admin.force_login(tenants.admin_a)
    url = f"/o/acme/keys/{key.pk}/limits/"
    assert f'href="{url}"' in admin.get("/o/acme/keys/").content.decode()
    assert admin.get(url).status_code == 200

    refused = admin.post(url, {"allowed_models": "chat", "monthly_budget": "-3"})
    assert refused.status_code == 400 and "greater than or equal to 0.01" in refused.content.decode()
    assert admin.post(url, {"allowed_models": "chat, embed", "monthly_budget": "7.25"}).status_code == 302
    key.refresh_from_db()
    assert key.allowed_models == ["chat", "embed"] and key.monthly_budget == Decimal("7.25")
    policy = load_snapshot(tenants.org_a.pk).spend
    assert policy is not None and policy.keys[key.pk].limit_micros == 7_250_000  # what the gateway enforces
    assert admin.post(url, {"allowed_models": "", "monthly_budget": ""}).status_code == 302
    key.refresh_from_db()
    assert key.allowed_models == [] and key.monthly_budget is None

    # Members and viewers cannot open it; another tenant's key is not found.
    for user in (tenants.member_a, tenants.viewer_a):
        client = Client()
        client.force_login(user)
        assert client.get(url).status_code == 403
        assert client.post(url, {"allowed_models": "x", "monthly_budget": "1"}).status_code == 403
    assert admin.get(f"/o/acme/keys/{other.pk}/limits/").status_code == 404
    assert admin.post(f"/o/acme/keys/{other.pk}/limits/", {"allowed_models": "x"}).status_code == 404
    other.refresh_from_db()
    assert other.allowed_models == []
