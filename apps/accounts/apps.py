from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts and access"

    def ready(self):
        # Importing these connects the signal handlers and registers the OpenAPI scheme; they use
        # models, so Django's documented place for them is ready(), not this module's top.
        from apps.accounts import schema, signals  # noqa: F401
