"""Template filters for usage figures: {{ value|compact }}, |money, |ms, |percent."""

from __future__ import annotations

from django import template

from metering import formatting

register = template.Library()
register.filter("compact", formatting.compact)
register.filter("money", formatting.money)
register.filter("ms", formatting.milliseconds)
register.filter("percent", formatting.percent)
