from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self):
        # Importing the module connects its receiver; Django's documented place for that is ready().
        from apps.audit import signals  # noqa: F401
