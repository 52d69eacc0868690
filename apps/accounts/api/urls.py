from django.urls import path

from apps.accounts.api.views import MeView, WebhookSecretView

urlpatterns = [
    path("me/", MeView.as_view(), name="api-me"),
    path("me/webhook-secret/", WebhookSecretView.as_view(), name="api-me-webhook-secret"),
]
