from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"

    def ready(self):
        from apps.monitoring import signals  # noqa: F401 (connects the admin-change audit)
