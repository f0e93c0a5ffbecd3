"""Turning a presented API key into the key's row, or a reason to refuse it."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tenancy import keys
from tenancy.models import ApiKey

# last_used_at is for people ("used 3 minutes ago"); writing it more often than this
# would put a database write on every authenticated request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_DUMMY_HASH = "0" * 64


class ApiKeyRejected(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def authenticate_api_key(plaintext: str) -> ApiKey:
    prefix = keys.parse_prefix(plaintext)
    if prefix is None:
        raise ApiKeyRejected(f"Malformed API key: expected {keys.KEY_FORMAT_HINT}.", "malformed_api_key")
    # Looking a key up by its public prefix is global by nature: the key tells us the tenant.
    key = ApiKey.objects.unscoped_across_tenants().select_related("organization").filter(prefix=prefix).first()
    if not keys.matches(plaintext, key.secret_hash if key else _DUMMY_HASH) or key is None:
        raise ApiKeyRejected("Invalid API key. Check it was copied whole, or create a new one in the console.", "invalid_api_key")
    now = timezone.now()
    if key.revoked_at is not None:
        raise ApiKeyRejected(f"This API key was revoked at {key.revoked_at:%Y-%m-%d %H:%M} UTC. Use another key.", "revoked_api_key")
    if key.expires_at is not None and key.expires_at <= now:
        raise ApiKeyRejected(f"This API key expired at {key.expires_at:%Y-%m-%d %H:%M} UTC. Rotate or create a key.", "expired_api_key")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.for_org(key.organization).filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
