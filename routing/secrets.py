"""Encryption at rest for external providers' API keys (Fernet: AES-128-CBC + HMAC-SHA256,
from the PyCA `cryptography` package). Keys derive from SWITCHBOARD_PROVIDER_KEY_SECRETS;
the first secret encrypts and every listed one decrypts, so secrets can be rotated."""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@cache
def _fernet(secrets: tuple[str, ...]) -> MultiFernet:
    keys = [Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())) for secret in secrets]
    return MultiFernet(keys)


def encrypt(plaintext: str) -> str:
    return _fernet(tuple(settings.PROVIDER_KEY_SECRETS)).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str | None:
    """The plaintext, or None when no configured secret opens it (a rotated-away secret)."""
    if not token:
        return None
    try:
        return _fernet(tuple(settings.PROVIDER_KEY_SECRETS)).decrypt(token.encode()).decode()
    except InvalidToken:
        return None
