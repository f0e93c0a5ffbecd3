from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from tenancy.models import Invitation, Membership, Role
from tests.conftest import Tenants
from tests.factories import UserFactory, invitation_token, issue_invitation
from tests.helpers import session_api


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_email_invitation_is_sent_and_accepted(tenants: Tenants, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        response = session_api(tenants.admin_a, tenants.org_a).post(
            "/api/v1/invitations/", {"email": "New@Example.test", "role": "member"}, format="json"
        )
    assert response.status_code == 201
    url = response.json()["url"]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new@example.test"] and url in mail.outbox[0].body
    invitee = UserFactory(email="new@example.test")
    path = url.split("://", 1)[1].split("/", 1)[1]
    client = _client(invitee)
    assert client.get("/" + path).status_code == 200
    assert client.post("/" + path).status_code == 302
    assert Membership.objects.for_org(tenants.org_a).get(user=invitee).role == Role.MEMBER
    # Single use.
    assert _client(UserFactory()).get("/" + path).status_code == 404


def test_email_bound_invitation_refuses_other_addresses(tenants: Tenants) -> None:
    issued = issue_invitation(tenants.org_a, email="only@example.test")
    stranger = UserFactory(email="other@example.test")
    response = _client(stranger).post(f"/invitations/{invitation_token(issued)}/", follow=True)
    assert "only@example.test" in response.content.decode()
    assert not Membership.objects.for_org(tenants.org_a).filter(user=stranger).exists()


def test_link_invitation_works_for_anyone_once(tenants: Tenants) -> None:
    issued = issue_invitation(tenants.org_a, role=Role.VIEWER)
    joiner = UserFactory()
    _client(joiner).post(f"/invitations/{invitation_token(issued)}/")
    assert Membership.objects.for_org(tenants.org_a).get(user=joiner).role == Role.VIEWER
    assert _client(UserFactory()).post(f"/invitations/{invitation_token(issued)}/").status_code == 404


def test_expired_and_revoked_invitations_are_refused(tenants: Tenants) -> None:
    expired = issue_invitation(tenants.org_a)
    Invitation.objects.for_org(tenants.org_a).filter(pk=expired.invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = issue_invitation(tenants.org_a)
    assert session_api(tenants.owner_a, tenants.org_a).delete(f"/api/v1/invitations/{revoked.invitation.id}/").status_code == 200
    for issued in (expired, revoked):
        user = UserFactory()
        assert _client(user).post(f"/invitations/{invitation_token(issued)}/").status_code == 404
        assert not Membership.objects.for_org(tenants.org_a).filter(user=user).exists()


def test_invitation_tokens_are_not_stored(tenants: Tenants) -> None:
    issued = issue_invitation(tenants.org_a)
    token = invitation_token(issued)
    row = Invitation.objects.for_org(tenants.org_a).get(pk=issued.invitation.pk)
    assert token not in row.token_hash and len(row.token_hash) == 64


def test_password_reset_mails_a_working_link(tenants: Tenants) -> None:
    client = Client()
    response = client.post("/accounts/password-reset/", {"email": tenants.member_a.email})
    assert response.status_code == 302 and len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if "/accounts/reset/" in line).strip()
    path = "/" + link.split("://", 1)[1].split("/", 1)[1]
    form_page = client.get(path, follow=True)
    assert form_page.status_code == 200
    set_url = form_page.redirect_chain[-1][0]
    done = client.post(set_url, {"new_password1": "a-new-long-password-7", "new_password2": "a-new-long-password-7"})
    assert done.status_code == 302
    signed_in = Client().post("/accounts/login/", {"username": tenants.member_a.email, "password": "a-new-long-password-7"})
    assert signed_in.status_code == 302  # the new password signs in, through the throttled login


def test_organization_switcher_lists_only_my_organizations(tenants: Tenants) -> None:
    Membership.objects.create(organization=tenants.org_b, user=tenants.member_a, role=Role.VIEWER)
    page = _client(tenants.member_a).get(f"/o/{tenants.org_a.slug}/").content.decode()
    assert "Acme" in page and "Globex" in page
    page = _client(tenants.viewer_a).get(f"/o/{tenants.org_a.slug}/").content.decode()
    assert "Globex" not in page


def _confirmation_path(email: str) -> str:
    [message] = [m for m in mail.outbox if email in m.to]
    link = next(line for line in message.body.splitlines() if "/accounts/signup/confirm/" in line).strip()
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


@pytest.mark.django_db(transaction=True)  # the email is sent once the sign-up commits
def test_signup_follows_only_local_next_links() -> None:
    form = {"email": "new@example.test", "full_name": "New", "password1": "a-long-password-42", "password2": "a-long-password-42"}
    sent = Client().post("/accounts/signup/?next=/invitations/abc/", form)
    assert sent.status_code == 302 and sent["Location"] == "/accounts/signup/sent/"
    local = Client().get(_confirmation_path("new@example.test"))
    assert local.status_code == 302 and local["Location"] == "/invitations/abc/"
    for unsafe in ("https://evil.example/", "foo", "//evil.example"):
        email = f"x{len(unsafe)}@example.test"
        Client().post(f"/accounts/signup/?next={unsafe}", {**form, "email": email})
        response = Client().get(_confirmation_path(email))
        assert response.status_code == 302 and response["Location"] == "/orgs/new/"


@pytest.mark.django_db(transaction=True)
def test_signup_never_says_whether_an_account_exists(tenants: Tenants) -> None:
    """The answer is the same for a new and a taken address; only the address's owner
    learns which, by email. An unconfirmed account cannot sign in; a link works once."""
    form = {"full_name": "Mallory", "password1": "a-long-password-42", "password2": "a-long-password-42"}
    taken = Client().post("/accounts/signup/", {**form, "email": tenants.member_a.email.upper()})
    fresh = Client().post("/accounts/signup/", {**form, "email": "fresh@example.test"})
    assert (taken.status_code, taken["Location"]) == (fresh.status_code, fresh["Location"]) == (302, "/accounts/signup/sent/")
    assert Client().get(taken["Location"]).content == Client().get(fresh["Location"]).content
    [note] = [m for m in mail.outbox if tenants.member_a.email in m.to]
    assert "already has one" in note.body and "/accounts/signup/confirm/" not in note.body
    assert not tenants.member_a.__class__.objects.get(pk=tenants.member_a.pk).check_password("a-long-password-42")  # untouched
    signin = {"username": "fresh@example.test", "password": "a-long-password-42"}
    assert Client().post("/accounts/login/", signin).status_code == 200  # not until confirmed
    confirm = _confirmation_path("fresh@example.test")
    assert Client().get(confirm).status_code == 302
    assert Client().post("/accounts/login/", signin).status_code == 302
    assert Client().get(confirm).status_code == 400  # used
    assert Client().get("/accounts/signup/confirm/forged-token/").status_code == 400
