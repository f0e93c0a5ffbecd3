"""Signing up without telling anyone which emails have accounts. Every sign-up answers the
same "check your inbox" page; what differs is only the email the address's owner gets:
a confirmation link for a new account (which stays inactive, unable to sign in, until the
link is followed), or a note that an account already exists, with the way to sign in or
reset the password. Confirmation links are signed, carry where to go next, and expire."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils.http import urlencode

from tenancy.models import User

SALT = "switchboard.signup"
LINK_LIFETIME_S = 24 * 3600


class InvalidConfirmation(Exception):
    """The link is forged, expired or already used."""


@dataclass(frozen=True)
class SignupRequest:
    email: str
    full_name: str
    password: str
    next_path: str = ""  # a local path to continue to once confirmed (an invitation)


def _link(user: User, next_path: str) -> str:
    token = signing.dumps({"user": user.pk, "email": user.email}, salt=SALT)
    query = f"?{urlencode({'next': next_path})}" if next_path else ""
    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse("signup-confirm", kwargs={"token": token}) + query


@transaction.atomic
def sign_up(request: SignupRequest) -> None:
    """Creates (or, if never confirmed, refreshes) an inactive account and mails its link,
    or mails the owner of an existing account a note. The caller learns nothing of which."""
    email = request.email.strip().lower()
    user = User.objects.filter(email=email).first()
    if user is not None and user.is_active:
        login = settings.PUBLIC_BASE_URL.rstrip("/") + reverse("login")
        reset = settings.PUBLIC_BASE_URL.rstrip("/") + reverse("password_reset")
        body = (
            "Someone (you, perhaps) tried to create a Switchboard account with this address, which already has one.\n\n"
            f"Sign in: {login}\nForgot the password? {reset}\n\nIf it was not you, nothing changed; ignore this email."
        )
        transaction.on_commit(lambda: send_mail("You already have a Switchboard account", body, None, [email]))
        return
    if user is None:
        user = User.objects.create_user(email, request.password, full_name=request.full_name, is_active=False)
    else:  # signed up before and never confirmed: the latest sign-up's details count
        user.full_name = request.full_name
        user.set_password(request.password)
        user.save(update_fields=["full_name", "password"])
    link = _link(user, request.next_path)
    body = f"Confirm your email to finish creating your Switchboard account:\n\n{link}\n\nThe link works for 24 hours."
    transaction.on_commit(lambda: send_mail("Confirm your Switchboard account", body, None, [email]))


@transaction.atomic
def confirm(token: str) -> User:
    """Activates the account a confirmation link names; InvalidConfirmation otherwise."""
    try:
        data = signing.loads(token, salt=SALT, max_age=LINK_LIFETIME_S)
    except signing.BadSignature:
        raise InvalidConfirmation from None
    user = User.objects.select_for_update().filter(pk=data["user"], email=data["email"]).first()
    if user is None or user.is_active:
        raise InvalidConfirmation
    user.is_active = True
    user.save(update_fields=["is_active"])
    return user
