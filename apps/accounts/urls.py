"""The personal API token pages, mounted at /api-tokens/ (see crucible/urls.py)."""

from django.urls import path

from apps.accounts import views

app_name = "accounts"

urlpatterns = [
    path("", views.tokens, name="tokens"),
    path("<int:pk>/revoke/", views.revoke, name="token-revoke"),
]
