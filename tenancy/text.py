"""Names people give (organizations, keys, providers' regions and model names) end up in
pages, logs, CSV files and HTTP headers: a line break in one could forge a header line or a
log entry, and breaks every call that sends it. Control characters are refused where a
name is saved, with a message that says so."""

from __future__ import annotations

import unicodedata

from tenancy.errors import ServiceError

# Unicode's line and paragraph separators break lines too, though they are not "Cc".
_SEPARATORS = {"\u2028", "\u2029", "\u0085"}


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" or char in _SEPARATORS for char in text)


def clean_name(value: str, *, field: str, what: str, max_length: int) -> str:
    """The name without surrounding spaces; ServiceError if it is empty, too long or holds a
    line break, tab or other control character."""
    name = value.strip()
    if not name:
        raise ServiceError(f"Give {what}.", field=field)
    if has_control_characters(name):
        raise ServiceError(f"{what[0].upper()}{what[1:]} cannot contain line breaks, tabs or other control characters.", field=field)
    if len(name) > max_length:
        raise ServiceError(f"Keep {what} to {max_length} characters.", field=field)
    return name
