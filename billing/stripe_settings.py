"""Stripe's settings, parsed strictly. Imports nothing but console.env, so the settings
module may use it too:

    from billing.stripe_settings import read_stripe_settings
    globals().update(read_stripe_settings(env))

Each value is read from Django's settings when they define it (tests override them
there) and from the environment otherwise, so billing works before and after the
settings module names them.

An empty SWITCHBOARD_STRIPE_SECRET_KEY (the embedded default) switches Stripe off:
invoices stay internal and every Stripe function is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from console.env import Env, EnvError

SECRET_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")


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


def read_stripe_settings(env: Env) -> dict[str, Any]:
    """The STRIPE_* Django settings from the environment, validated."""
    secret_key = env.str("SWITCHBOARD_STRIPE_SECRET_KEY", "") or ""
    if secret_key and not secret_key.startswith(SECRET_KEY_PREFIXES):
        raise EnvError(f"SWITCHBOARD_STRIPE_SECRET_KEY must be a Stripe secret or restricted key ({', '.join(SECRET_KEY_PREFIXES)}...).")
    webhook_secret = env.str("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "") or ""
    if webhook_secret and not webhook_secret.startswith("whsec_"):
        raise EnvError("SWITCHBOARD_STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret (whsec_...).")
    return {
        "STRIPE_SECRET_KEY": secret_key,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": env.url("SWITCHBOARD_STRIPE_API_BASE", ("http", "https")),
        "STRIPE_MAX_NETWORK_RETRIES": env.int("SWITCHBOARD_STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0, maximum=10),
        "STRIPE_PAST_DUE_GRACE_DAYS": env.int("SWITCHBOARD_STRIPE_PAST_DUE_GRACE_DAYS", 7, minimum=0, maximum=90),
    }


def stripe_settings() -> StripeSettings:
    """The settings in force: Django's STRIPE_* settings where defined, else the environment."""
    from django.conf import settings

    from_env = read_stripe_settings(Env())
    values = {name: getattr(settings, name, default) for name, default in from_env.items()}
    return StripeSettings(
        secret_key=str(values["STRIPE_SECRET_KEY"] or ""),
        webhook_secret=str(values["STRIPE_WEBHOOK_SECRET"] or ""),
        api_base=str(values["STRIPE_API_BASE"]) if values["STRIPE_API_BASE"] else None,
        max_network_retries=int(values["STRIPE_MAX_NETWORK_RETRIES"]),
        past_due_grace_days=int(values["STRIPE_PAST_DUE_GRACE_DAYS"]),
    )
