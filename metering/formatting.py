"""Numbers for people, the same rules as the charts' (metering/static/metering/charts.js):
1,234 and 12.3K requests, 1.2M tokens, $3.41, 12 ms, 0.5%."""

from __future__ import annotations

from decimal import Decimal

_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def compact(value: float | int | None) -> str:
    """Exact below 10,000 (1,234), then 12.3K, 123K, 1.2M."""
    if value is None:
        return "–"
    number = float(value)
    if abs(number) < 10_000:
        return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}".rstrip("0").rstrip(".")
    for size, suffix in _UNITS:
        if abs(number) >= size:
            scaled = number / size
            text = f"{scaled:.1f}" if abs(scaled) < 100 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return f"{number:,.0f}"


def money(value: Decimal | float | str | None) -> str:
    """$0.00, $0.0012 (two significant digits below a cent), $3.41, $1,234.56, $1.2M."""
    if value is None or value == "":
        return "–"
    number = Decimal(str(value))
    if number == 0:
        return "$0.00"
    sign = "-" if number < 0 else ""
    number = abs(number)
    if number >= 100_000:
        return sign + "$" + compact(float(number))
    if number >= Decimal("0.01"):
        return f"{sign}${number:,.2f}"
    return f"{sign}${float(number):.2g}" if float(number) >= 1e-4 else f"{sign}<$0.0001"


def milliseconds(value: float | None) -> str:
    """0.8 ms, 12 ms, 1.25 s."""
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 10_000:
        return f"{value / 1000:.2f} s"
    return f"{value / 1000:.1f} s"


def percent(fraction: float | None) -> str:
    """0%, <0.1%, 0.5%, 12%."""
    if fraction is None:
        return "–"
    value = fraction * 100
    if value == 0:
        return "0%"
    if value < 0.1:
        return "<0.1%"
    if value < 10:
        return f"{value:.1f}".removesuffix(".0") + "%"
    return f"{value:.0f}%"
