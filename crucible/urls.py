from allauth.account import views as allauth_views
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.accounts.views import moved_to_api_tokens, throttled_sign_in

# Swagger UI's assets are served from our own static files (drf-spectacular-sidecar); the split view
# serves its start-up script as a file, so the strict CSP (no inline script, no CDN) holds here too.

urlpatterns = [
    path("admin/django-rq/", include("django_rq.urls")),
    # Both password sign-in pages pass the same throttle (apps/accounts/throttle.py) before their own view.
    path("admin/login/", throttled_sign_in(admin.site.login, "username")),
    path("admin/", admin.site.urls),
    path("accounts/login/", throttled_sign_in(allauth_views.login, "login"), name="account_login"),
    path("accounts/", include("allauth.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/v1/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema"),
        name="api-docs",
    ),
    path("api/v1/", include("apps.console.api.urls")),
    path("api/v1/", include("apps.evaluations.api.urls")),
    path("api/v1/", include("apps.tasks.api.urls")),
    path("api/v1/", include("apps.sessions.api.urls")),
    path("api/v1/", include("apps.accounts.api.urls")),
    # The token pages, named apart from allauth's /accounts/; their old home redirects here for good.
    path("api-tokens/", include("apps.accounts.urls")),
    re_path(r"^account/tokens/(?P<rest>.*)$", moved_to_api_tokens),
    path("monitoring/", include("apps.console.urls")),
    path("", include("apps.tasks.urls")),
    path("", include("apps.evaluations.urls")),
    path("", include("apps.sessions.urls")),
]

handler400 = "apps.accounts.errors.bad_request"
handler403 = "apps.accounts.errors.permission_denied"
handler404 = "apps.accounts.errors.page_not_found"
handler500 = "apps.accounts.errors.server_error"
