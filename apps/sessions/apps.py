from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "apps.sessions"
    label = "sandbox_sessions"  # "sessions" is Django's own (django.contrib.sessions)
    verbose_name = "Sessions (agent sandboxes)"
