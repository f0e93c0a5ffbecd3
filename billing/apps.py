from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Stripe's models live in billing/stripe/models.py; importing it registers them
        # with this app (label "billing", so their tables and migrations are unchanged).
        from billing.stripe import models as stripe_models  # noqa: F401
