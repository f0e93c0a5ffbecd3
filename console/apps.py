from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    label = "console_pages"  # "console" is tenancy's label (tenancy/apps.py)
    verbose_name = "Console"
