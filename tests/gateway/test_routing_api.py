"""Routes and providers through the management API and the console."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from django.test import Client

from deployments.models import Cluster, Replica
from routing.gateway.auth import authenticate, playground_token
from routing.gateway.errors import GatewayError
from routing.gateway.snapshot import load_snapshot
from routing.models import ExternalProvider, ModelRoute
from tenancy.models import AuditEntry, Membership
from tenancy.network import OutboundPolicy
from tests.conftest import Tenants
from tests.factories import create_deployment, create_provider, create_route
from tests.helpers import session_api

SECRET = "sk-live-0123456789abcdef"


def _provider_body(**overrides: object) -> dict[str, object]:
    return {
        "name": "openai-ish",
        "base_url": "https://llm.example.test/v1",
        "region": "us-east",
        "api_key": SECRET,
        "input_price_per_mtok": "0.15",
        "output_price_per_mtok": "0.6",
        **overrides,
    }


def test_provider_keys_are_write_only_and_encrypted_at_rest(tenants: Tenants) -> None:
    api = session_api(tenants.admin_a, tenants.org_a)
    created = api.post("/api/v1/providers/", _provider_body(), format="json")
    assert created.status_code == 201
    assert created.json()["api_key"] == "...cdef" and SECRET not in created.content.decode()
    provider = ExternalProvider.objects.for_org(tenants.org_a).get()
    assert SECRET not in provider.api_key_encrypted and provider.api_key_encrypted
    listed = api.get("/api/v1/providers/").content.decode()
    assert SECRET not in listed
    entry = AuditEntry.objects.for_org(tenants.org_a).get(action="provider.created")
    assert SECRET not in str(entry.after)

    # An update without a key keeps it; the gateway decrypts the stored one.
    assert api.patch(f"/api/v1/providers/{provider.pk}/", {"input_price_per_mtok": "0.2"}, format="json").status_code == 200
    create_route(tenants.org_a, "chat", targets=[((provider, "gpt-x"), 100)])
    endpoint = load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].endpoints[0]
    assert endpoint.api_key == SECRET and endpoint.base_url == "https://llm.example.test/v1"

    page = Client()
    page.force_login(tenants.admin_a)
    html = page.get(f"/o/{tenants.org_a.slug}/routing/providers/{provider.pk}/edit/").content.decode()
    assert SECRET not in html and "Leave empty to keep" in html


def test_members_cannot_manage_providers_but_can_edit_routes(tenants: Tenants) -> None:
    member = session_api(tenants.member_a, tenants.org_a)
    assert member.post("/api/v1/providers/", _provider_body(), format="json").status_code == 403
    deployment = create_deployment(tenants.org_a, name="chat")
    body = {"name": "chat-default", "strategy": "ordered", "targets": [{"deployment": deployment.pk}]}
    assert member.post("/api/v1/routes/", body, format="json").status_code == 201


def test_route_validation_names_what_to_fix(tenants: Tenants) -> None:
    api = session_api(tenants.owner_a, tenants.org_a)
    deployment = create_deployment(tenants.org_a, name="chat")
    foreign = create_deployment(tenants.org_b, name="secret")
    target = [{"deployment": deployment.pk}]

    def error(body: dict[str, object]) -> dict[str, object]:
        response = api.post("/api/v1/routes/", body, format="json")
        assert response.status_code == 400, response.content
        return response.json()["error"]

    assert "fields" in error({"name": "x", "targets": []})
    assert "region" in error({"name": "eu", "targets": target, "allowed_regions": ["mars-1"]})["message"]
    assert "itself" in error({"name": "loop", "targets": target, "fallbacks": ["loop"]})["message"]
    assert "no route or deployment" in error({"name": "fb", "targets": target, "fallbacks": ["nowhere"]})["message"]
    assert (
        "either a deployment or a provider"
        in error({"name": "both", "targets": [{"deployment": deployment.pk, "provider": "prv_x"}]})["message"]
    )
    assert "weight above zero" in error({"name": "w", "targets": [{"deployment": deployment.pk, "weight": 0}]})["message"]
    assert "deadline" in error({"name": "t", "targets": target, "attempt_timeout_s": 60, "deadline_s": 10})["message"]
    assert "letters, digits" in error({"name": "has space", "targets": target})["message"]
    # Another tenant's deployment is unknown here, and its name is not echoed back.
    message = error({"name": "steal", "targets": [{"deployment": foreign.pk}]})["message"]
    assert "secret" not in str(message)
    assert ModelRoute.objects.for_org(tenants.org_a).count() == 0


def test_routes_round_trip_and_renames_follow_fallbacks(tenants: Tenants) -> None:
    api = session_api(tenants.owner_a, tenants.org_a)
    deployment = create_deployment(tenants.org_a, name="chat")
    provider = create_provider(tenants.org_a, name="backup", region="eu-west")
    backup = api.post(
        "/api/v1/routes/", {"name": "backup", "targets": [{"provider": provider.pk, "provider_model": "m"}]}, format="json"
    ).json()
    body = {
        "name": "chat-default",
        "strategy": "weighted",
        "allowed_regions": ["us-east", "eu-west"],
        "fallbacks": ["backup"],
        "max_attempts": 4,
        "attempt_timeout_s": 5,
        "deadline_s": 30,
        "breaker_failures": 3,
        "breaker_cooldown_s": 2,
        "targets": [{"deployment": deployment.pk, "weight": 90}, {"provider": provider.pk, "provider_model": "m", "weight": 10}],
    }
    route = api.post("/api/v1/routes/", body, format="json").json()
    assert [t["weight"] for t in route["targets"]] == [90, 10] and route["allowed_regions"] == ["eu-west", "us-east"]
    assert api.get(f"/api/v1/routes/{route['id']}/").json()["fallbacks"] == ["backup"]
    renamed = api.put(
        f"/api/v1/routes/{backup['id']}/", {"name": "reserve", "targets": [{"provider": provider.pk, "provider_model": "m"}]}, format="json"
    )
    assert renamed.status_code == 200
    assert api.get(f"/api/v1/routes/{route['id']}/").json()["fallbacks"] == ["reserve"]
    # A route others fall back to cannot be deleted; a provider in use cannot either.
    assert api.delete(f"/api/v1/routes/{backup['id']}/").status_code == 409
    assert api.delete(f"/api/v1/providers/{provider.pk}/").status_code == 409
    assert api.delete(f"/api/v1/routes/{route['id']}/").status_code == 204
    assert api.delete(f"/api/v1/routes/{backup['id']}/").status_code == 204
    assert api.delete(f"/api/v1/providers/{provider.pk}/").status_code == 204


def test_console_route_form_creates_a_route_and_the_page_shows_it(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat")
    page = Client()
    page.force_login(tenants.member_a)
    base = f"/o/{tenants.org_a.slug}/routing"
    assert page.get(base + "/new/").status_code == 200
    form = {
        "name": "chat-default",
        "strategy": "ordered",
        "allowed_regions": ["us-east"],
        "fallbacks": "",
        "max_attempts": 3,
        "attempt_timeout_s": 30,
        "deadline_s": 120,
        "breaker_failures": 5,
        "breaker_cooldown_s": 10,
        "targets-TOTAL_FORMS": 2,
        "targets-INITIAL_FORMS": 0,
        "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 20,
        "targets-0-target": f"deployment:{deployment.pk}",
        "targets-0-provider_model": "",
        "targets-0-weight": 100,
        "targets-1-target": "",
        "targets-1-provider_model": "",
        "targets-1-weight": 100,
    }
    response = page.post(base + "/new/", form)
    route = ModelRoute.objects.for_org(tenants.org_a).get()
    assert response.status_code == 302 and response["Location"].endswith(f"/routing/{route.pk}/")
    detail = page.get(f"{base}/{route.pk}/").content.decode()
    assert "deployment:chat" in detail and "No requests in the last hour" in detail
    assert "chat-default" in page.get(base + "/").content.decode()
    # The same form without a target says what is missing.
    bad = page.post(base + "/new/", {**form, "name": "other", "targets-0-target": ""})
    assert bad.status_code == 400 and "at least one target" in bad.content.decode()

    viewer = Client()
    viewer.force_login(tenants.viewer_a)
    assert viewer.get(f"{base}/{route.pk}/").status_code == 200
    assert viewer.get(base + "/new/").status_code == 403
    assert viewer.post(f"{base}/{route.pk}/delete/").status_code == 403
    assert viewer.get(f"/o/{tenants.org_a.slug}/routing/playground/").status_code == 403


@pytest.mark.django_db(transaction=True)  # the gateway checks the membership on its own connection
def test_playground_page_carries_a_token_for_this_organization_only(tenants: Tenants) -> None:
    create_route(tenants.org_a, "chat-default")
    page = Client()
    page.force_login(tenants.member_a)
    html = page.get(f"/o/{tenants.org_a.slug}/routing/playground/").content.decode()
    assert 'data-token="sbp_' in html and "chat-default" in html
    token = html.split('data-token="', 1)[1].split('"', 1)[0]
    caller = asyncio.run(authenticate(f"Bearer {token}".encode()))
    assert caller.org_id == tenants.org_a.pk and caller.key_id == ""


def test_the_playground_marks_what_a_call_would_have_to_start_a_replica_for(tenants: Tenants) -> None:
    org = tenants.org_a
    idle = create_deployment(org, name="idle", min_replicas=0, max_replicas=1)
    create_deployment(org, name="always-on", min_replicas=1, max_replicas=1)  # kept up by the control plane: nothing to wake
    awake = create_deployment(org, name="awake", min_replicas=0, max_replicas=1)
    cluster = Cluster.objects.get(name="local-us-east")
    Replica.objects.create(organization=org, deployment=awake, revision=awake.current_revision, cluster=cluster, state=Replica.State.READY)
    create_route(org, "to-idle", targets=[(idle, 100)])
    create_route(org, "idle-or-provider", targets=[(idle, 100), ((create_provider(org, name="up"), "m"), 100)])
    create_route(org, "to-awake", targets=[(awake, 100)])
    page = Client()
    page.force_login(tenants.member_a)
    html = page.get(f"/o/{org.slug}/routing/playground/").content.decode()
    cold = set(re.findall(r'<option value="([^"]+)" data-cold="1"', html))
    assert cold == {"idle", "to-idle"}
    assert 'data-cold-start-s="' in html


@pytest.mark.django_db(transaction=True)
def test_a_playground_token_dies_with_the_membership(tenants: Tenants, settings) -> None:  # type: ignore[no-untyped-def]
    token = playground_token(tenants.org_a.pk, tenants.member_a.pk)
    assert asyncio.run(authenticate(f"Bearer {token}".encode())).org_id == tenants.org_a.pk
    Membership.objects.for_org(tenants.org_a).filter(user=tenants.member_a).delete()
    time.sleep(settings.GATEWAY_KEY_CACHE_SECONDS + 0.2)  # the cached answer's lifetime: the revocation bound
    with pytest.raises(GatewayError) as refused:
        asyncio.run(authenticate(f"Bearer {token}".encode()))
    assert refused.value.status == 401 and "no longer a member" in refused.value.message
    # A token for an organization the user never belonged to is refused at once.
    forged = playground_token(tenants.org_b.pk, tenants.member_a.pk)
    with pytest.raises(GatewayError):
        asyncio.run(authenticate(f"Bearer {forged}".encode()))


def test_provider_addresses_and_keys_are_checked(tenants: Tenants, settings) -> None:  # type: ignore[no-untyped-def]
    api = session_api(tenants.admin_a, tenants.org_a)
    bad_key = api.post("/api/v1/providers/", _provider_body(api_key="sk-x\r\nX-Injected: 1"), format="json")
    assert bad_key.status_code == 400 and "line breaks" in bad_key.json()["error"]["message"]
    bad_port = api.post("/api/v1/providers/", _provider_body(base_url="https://llm.example.test:99999/v1"), format="json")
    assert bad_port.status_code == 400
    settings.OUTBOUND_POLICY = OutboundPolicy()  # no operator allowance: as a fresh install
    for url in (
        "http://127.0.0.1:9101/v1",
        "http://localhost:8000/v1",
        "http://10.0.0.7/v1",
        "http://[::1]:8000/v1",
        "http://[::ffff:127.0.0.1]:8000/v1",
        "http://169.254.169.254/latest",
        "http://100.64.0.1/v1",
        "http://0.0.0.0:8000/v1",
        "http://224.0.0.1/v1",
    ):
        refused = api.post("/api/v1/providers/", _provider_body(name="inside", base_url=url), format="json")
        assert refused.status_code == 400 and "public internet" in refused.json()["error"]["message"], url
    assert not ExternalProvider.objects.for_org(tenants.org_a).exists()
