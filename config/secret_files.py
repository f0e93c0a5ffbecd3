"""Secrets a fresh install generates for itself: each one a file in the data directory,
readable by its owner only (0600), created once and reused by every process after. An
environment variable, where set, wins. No secret ships with the code."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def read_or_create(path: Path) -> str:
    """The secret in `path`, generated (48 random bytes, URL-safe) if the file is missing.
    Processes starting at once agree on one value: the file appears whole or not at all."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    try:
        os.link(candidate, path)  # fails if another process got there first: theirs wins
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return _read(path)


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if len(value) < 32:
        raise ValueError(f"{path} holds no usable secret; delete it to have a new one generated")
    return value
