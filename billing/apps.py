from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Metering and billing"

    def ready(self) -> None:
        # Stripe's models live in their own module; importing it registers them with the app.
        from billing import stripe_models  # noqa: F401
