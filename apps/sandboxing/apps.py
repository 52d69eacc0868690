from django.apps import AppConfig


class SandboxingConfig(AppConfig):
    name = "apps.sandboxing"
    label = "sandboxing"

    def ready(self) -> None:
        from apps.sandboxing import checks  # noqa: F401  (registers the system checks; Django's place for it)
