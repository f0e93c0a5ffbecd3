"""Template filters of the Admin pages."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def plain(value: object) -> str:
    """A Decimal with its trailing zeros dropped and never in exponent form (10, not 1E+1)."""
    if isinstance(value, Decimal):
        text = f"{value.normalize():f}"
        return text
    return "" if value is None else str(value)
