"""Stripe's settings in force, from Django's STRIPE_* settings (config/settings.py parses
them strictly from SWITCHBOARD_STRIPE_*; tests override them there).

An empty secret key (the embedded default) switches Stripe off: invoices stay internal
and every Stripe function is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class StripeSettings:
    secret_key: str
    webhook_secret: str
    api_base: str | None
    max_network_retries: int
    past_due_grace_days: int

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key)


def stripe_settings() -> StripeSettings:
    return StripeSettings(
        secret_key=settings.STRIPE_SECRET_KEY or "",
        webhook_secret=settings.STRIPE_WEBHOOK_SECRET or "",
        api_base=settings.STRIPE_API_BASE or None,
        max_network_retries=int(settings.STRIPE_MAX_NETWORK_RETRIES),
        past_due_grace_days=int(settings.STRIPE_PAST_DUE_GRACE_DAYS),
    )
