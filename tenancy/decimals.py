"""Exact amounts as text: always a plain decimal, never an exponent. Python's str() of a
Decimal switches to scientific notation for small or normalized values (str() of
0.000000029751 is "2.9751E-8", of Decimal("100").normalize() "1E+2"), which clients,
spreadsheets and people misread. Every money figure, price or rate we print goes through
here."""

from __future__ import annotations

from decimal import Decimal


def plain(value: Decimal) -> str:
    return format(value, "f")
