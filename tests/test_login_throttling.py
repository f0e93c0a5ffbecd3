"""Sign-in and password reset are throttled: the fifth wrong password for one account from
one address locks that pair out for 15 minutes (django-axes), and reset emails are capped
per address and per client, answering the same page either way."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client

from tests.conftest import Tenants

PASSWORD = "correct-horse-battery"


def _login(client: Client, email: str, password: str, address: str = "10.0.0.1") -> int:
    return client.post("/accounts/login/", {"username": email, "password": password}, REMOTE_ADDR=address).status_code


@pytest.fixture
def account(tenants: Tenants) -> str:
    tenants.member_a.set_password(PASSWORD)
    tenants.member_a.save()
    tenants.viewer_a.set_password(PASSWORD)
    tenants.viewer_a.save()
    return tenants.member_a.email


def test_five_wrong_passwords_lock_the_account_from_that_address(tenants: Tenants, account: str) -> None:
    client = Client()
    assert [_login(client, account, "wrong") for _ in range(4)] == [200] * 4  # the form, with its error
    assert _login(client, account, "wrong") == 429  # the fifth locks
    locked = client.post("/accounts/login/", {"username": account, "password": PASSWORD}, REMOTE_ADDR="10.0.0.1")
    assert locked.status_code == 429 and "Too many attempts" in locked.content.decode()  # even the right password
    assert _login(Client(), account.upper(), PASSWORD) == 429  # the same account in other letters
    # Another account from that address, and the same account from another, still sign in.
    assert _login(Client(), tenants.viewer_a.email, PASSWORD) == 302
    assert _login(Client(), account, PASSWORD, address="10.0.0.2") == 302


def test_a_success_clears_the_count(account: str) -> None:
    client = Client()
    for _ in range(4):
        _login(client, account, "wrong")
    assert _login(Client(), account, PASSWORD) == 302
    assert [_login(Client(), account, "wrong") for _ in range(4)] == [200] * 4  # counting from zero again


def test_reset_emails_are_capped_and_the_page_never_says_whether_an_account_exists(account: str) -> None:
    cache.clear()
    client = Client()
    answers = [client.post("/accounts/password-reset/", {"email": account}, REMOTE_ADDR="10.0.0.3") for _ in range(5)]
    assert all(answer.status_code == 302 and answer["Location"] == "/accounts/password-reset/sent/" for answer in answers)
    assert len(mail.outbox) == 3  # the rest were not sent
    unknown = client.post("/accounts/password-reset/", {"email": "nobody@example.test"}, REMOTE_ADDR="10.0.0.4")
    assert unknown.status_code == 302 and unknown["Location"] == "/accounts/password-reset/sent/"
    assert len(mail.outbox) == 3
