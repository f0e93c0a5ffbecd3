"""Strict parsing of settings from environment variables.

Every reader names the variable in its error, so a wrong value stops start-up with a
message that says exactly what to fix instead of running half-configured.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from typing import overload
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvError(ImproperlyConfigured):
    """A setting's environment variable holds a value that cannot be used."""


class Env:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    @overload
    def str(self, name: str, default: str, *, required: bool = False) -> str: ...

    @overload
    def str(self, name: str, default: None = None, *, required: bool = False) -> str | None: ...

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._raw(name)
        if value is None:
            if required:
                raise EnvError(f"{name} must be set.")
            return default
        return value

    def bool(self, name: builtins.str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise EnvError(f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off.")

    def int(self, name: builtins.str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise EnvError(f"{name}={value!r} is not a whole number.") from None
        if minimum is not None and number < minimum:
            raise EnvError(f"{name}={number} is below the minimum of {minimum}.")
        if maximum is not None and number > maximum:
            raise EnvError(f"{name}={number} is above the maximum of {maximum}.")
        return number

    def choice(self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self._raw(name)
        if value is None:
            return default
        if value not in choices:
            raise EnvError(f"{name}={value!r} is not one of: {', '.join(choices)}.")
        return value

    def list(self, name: builtins.str, default: list[builtins.str]) -> list[builtins.str]:
        value = self._raw(name)
        if value is None:
            return list(default)
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items):
            raise EnvError(f"{name}={value!r} has an empty item; separate values with single commas.")
        return items

    def url(self, name: builtins.str, schemes: tuple[builtins.str, ...]) -> builtins.str | None:
        value = self._raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            allowed = ", ".join(f"{scheme}://" for scheme in schemes)
            raise EnvError(f"{name} must start with one of {allowed} (got {parts.scheme or 'no scheme'}://).")
        if not parts.netloc and not parts.path.strip("/"):
            raise EnvError(f"{name}={value!r} names no host or database.")
        return value
