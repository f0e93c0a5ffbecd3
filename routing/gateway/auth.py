"""Who is calling: an API key (cached, see routing.gateway.cache) or a console playground token."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from routing.gateway.cache import RefreshingCache
from routing.gateway.errors import GatewayError
from tenancy.key_auth import ApiKeyRejected, authenticate_api_key
from tenancy.models import ApiKey, Membership

PLAYGROUND_PREFIX = "sbp_"
PLAYGROUND_SALT = "switchboard.playground"
PLAYGROUND_TOKEN_SECONDS = 15 * 60


@dataclass(frozen=True, slots=True)
class Caller:
    org_id: str
    key_id: str  # empty for the playground
    can_infer: bool
    expires_at: float | None  # epoch seconds
    allowed_models: frozenset[str] = frozenset()  # empty: every route and deployment


def _load_key(plaintext: str) -> Caller:
    key = authenticate_api_key(plaintext)
    return Caller(
        org_id=key.organization_id,
        key_id=key.pk,
        can_infer=ApiKey.Scope.INFERENCE in key.scopes,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        allowed_models=frozenset(key.allowed_models),
    )


_keys: RefreshingCache[str, Caller] = RefreshingCache(
    _load_key,
    ttl=settings.GATEWAY_KEY_CACHE_SECONDS,
    stale_for=settings.GATEWAY_KEY_STALE_SECONDS,
    negative_ttl=settings.GATEWAY_KEY_CACHE_SECONDS,
    refusals=(ApiKeyRejected,),
)


class NotAMember(Exception):
    """The playground token's user is no longer a member of its organization."""


def _load_membership(pair: str) -> bool:
    org_id, _, user_id = pair.partition(":")
    if not Membership.objects.filter(organization_id=org_id, user_id=int(user_id), user__is_active=True).exists():
        raise NotAMember(pair)
    return True


# A playground token is signed for 15 minutes, but it is only as good as the membership
# behind it: checked on every use, cached as briefly as keys are (the revocation bound).
_memberships: RefreshingCache[str, bool] = RefreshingCache(
    _load_membership,
    ttl=settings.GATEWAY_KEY_CACHE_SECONDS,
    stale_for=settings.GATEWAY_KEY_STALE_SECONDS,
    negative_ttl=settings.GATEWAY_KEY_CACHE_SECONDS,
    refusals=(NotAMember,),
)


def playground_token(org_id: str, user_id: int) -> str:
    return PLAYGROUND_PREFIX + signing.dumps({"org": org_id, "user": user_id}, salt=PLAYGROUND_SALT, compress=True)


async def authenticate(authorization: bytes | None) -> Caller:
    if not authorization:
        raise GatewayError(
            401,
            "Missing API key. Send it as 'Authorization: Bearer sbk_...'; create keys in the console under API keys.",
            "missing_api_key",
        )
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise GatewayError(401, "Send the API key as 'Authorization: Bearer sbk_...'.", "invalid_authorization_header")
    if token.startswith(PLAYGROUND_PREFIX):
        caller, user_id = _playground_caller(token)
        try:
            await _memberships.get(f"{caller.org_id}:{user_id}")
        except NotAMember:
            raise GatewayError(401, "This playground session ended: you are no longer a member here.", "invalid_api_key") from None
        return caller
    try:
        caller = await _keys.get(token)
    except ApiKeyRejected as rejected:
        raise GatewayError(401, rejected.message, rejected.code) from None
    if caller.expires_at is not None and caller.expires_at <= time.time():
        raise GatewayError(401, "This API key has expired. Rotate or create a key.", "expired_api_key")
    if not caller.can_infer:
        raise GatewayError(403, "This API key lacks the 'inference' scope. Create a key with it to call models.", "insufficient_scope")
    return caller


def _playground_caller(token: str) -> tuple[Caller, int]:
    try:
        data = signing.loads(token[len(PLAYGROUND_PREFIX) :], salt=PLAYGROUND_SALT, max_age=PLAYGROUND_TOKEN_SECONDS)
    except signing.SignatureExpired:
        raise GatewayError(401, "The playground session expired; reload the page.", "expired_playground_token") from None
    except signing.BadSignature:
        raise GatewayError(401, "Invalid playground token; reload the page.", "invalid_api_key") from None
    return Caller(org_id=data["org"], key_id="", can_infer=True, expires_at=None), int(data["user"])
