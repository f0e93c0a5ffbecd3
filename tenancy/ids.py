"""Public object ids: a type prefix and 20 random base62 characters (`key_4Fq...`).

Ids are opaque and unguessable, so they say nothing about how many rows another tenant
has, and their prefix tells a reader what kind of object an id names.
"""

from __future__ import annotations

import secrets
import string

from django.db import models
from django.utils.deconstruct import deconstructible

_ALPHABET = string.ascii_letters + string.digits
ID_RANDOM_LENGTH = 20


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@deconstructible
class PublicIdFactory:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self) -> str:
        return f"{self.prefix}_{random_token(ID_RANDOM_LENGTH)}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicIdFactory) and other.prefix == self.prefix


def public_id_field(prefix: str) -> models.CharField:
    return models.CharField(
        primary_key=True, max_length=len(prefix) + 1 + ID_RANDOM_LENGTH, default=PublicIdFactory(prefix), editable=False
    )
