"""CSV cells that a spreadsheet will not run: a text cell starting with =, +, -, @, a tab or
a carriage return is a formula to Excel, LibreOffice and Google Sheets, and exports carry
names that callers chose (a model name sent to the gateway, a route). Such a cell is
prefixed with an apostrophe, as OWASP advises; plain numbers (a negative amount) are kept."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from tenancy.decimals import plain

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return text.strip() == text and "e" not in text.lower() and text.lower() not in ("nan", "-nan", "inf", "-inf", "infinity", "-infinity")


def safe_cell(value: object) -> object:
    """The cell as a spreadsheet should get it: formulas as text, decimals never with an exponent."""
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, str) and value.startswith(_TRIGGERS) and not _is_number(value):
        return "'" + value
    return value


def safe_row(row: Sequence[object]) -> list[object]:
    return [safe_cell(value) for value in row]
