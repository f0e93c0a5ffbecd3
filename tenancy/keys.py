"""API key secrets: generation, format and hashing.

A key reads `sbk_<prefix>_<secret>`. The prefix is public and indexed; the database keeps
only HMAC-SHA256(server secret, whole key), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from django.conf import settings

from tenancy.ids import random_token

PREFIX_LENGTH = 12
SECRET_LENGTH = 40
KEY_PATTERN = re.compile(rf"^sbk_([A-Za-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})$")
KEY_FORMAT_HINT = f"sbk_ followed by {PREFIX_LENGTH} letters or digits, an underscore and {SECRET_LENGTH} letters or digits"


@dataclass(frozen=True)
class NewKeyMaterial:
    plaintext: str
    prefix: str
    secret_hash: str


def hash_key(plaintext: str) -> str:
    return hmac.new(settings.API_KEY_HMAC_SECRET.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def generate_key() -> NewKeyMaterial:
    prefix = random_token(PREFIX_LENGTH)
    plaintext = f"sbk_{prefix}_{random_token(SECRET_LENGTH)}"
    return NewKeyMaterial(plaintext=plaintext, prefix=prefix, secret_hash=hash_key(plaintext))


def parse_prefix(plaintext: str) -> str | None:
    match = KEY_PATTERN.match(plaintext)
    return match.group(1) if match else None


def matches(plaintext: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), secret_hash)
