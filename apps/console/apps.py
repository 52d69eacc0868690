from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console, the top layer: it may read every app below it, and none imports it."""

    name = "apps.console"
    label = "console"
    verbose_name = "Operator console"
