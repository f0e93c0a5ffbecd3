"""A fixed-window counter in the shared cache, for actions that send something to a person
(a password-reset email): at most `limit` per `window_s` for one key. On Redis the count
is atomic; on the embedded default's file cache two processes may both pass at the edge,
which is fine for a courtesy limit (logins are throttled by django-axes in the database)."""

from __future__ import annotations

from django.core.cache import cache


def allow(*, key: str, limit: int, window_s: int) -> bool:
    """Counts one more attempt for `key`; whether it is still within the limit."""
    name = f"throttle:{key}"
    if cache.add(name, 1, timeout=window_s):
        return True
    try:
        return cache.incr(name) <= limit
    except ValueError:  # expired between the two calls: this one starts a new window
        cache.add(name, 1, timeout=window_s)
        return True
