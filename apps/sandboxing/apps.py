from django.apps import AppConfig


class SandboxingConfig(AppConfig):
    name = "apps.sandboxing"
    label = "sandboxing"
