from django.apps import AppConfig

from tenancy import signals


class TenancyConfig(AppConfig):
    name = "tenancy"
    # The label these models were created under, when tenancy lived in console/: their
    # tables (console_organization, ...), migrations and every foreign key name it, and
    # AUTH_USER_MODEL is "console.User". Keeping it moves the code without touching data.
    label = "console"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        signals.connect()
