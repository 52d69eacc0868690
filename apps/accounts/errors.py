"""Error pages: house-style HTML for the site, JSON for the API, never a stack trace or a secret.

Wired in ``crucible/urls.py`` as handler400/403/404/500. DRF already answers errors raised in API views
with JSON; these cover what happens outside them (an unknown /api/ URL, an unhandled exception).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponseServerError, JsonResponse
from django.template import loader
from django.template.response import TemplateResponse
from django.views.decorators.csrf import requires_csrf_token

MESSAGES = {
    400: "Bad request.",
    403: "You do not have permission to do that.",
    404: "Not found.",
    413: "Request body too large.",
    500: "Server error. The problem has been logged.",
}


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def _json(status: int) -> JsonResponse:
    return JsonResponse({"detail": MESSAGES[status], "error": MESSAGES[status]}, status=status)


def _page(request, status: int):
    if _is_api(request):
        return _json(status)
    context = {"status": status, "message": MESSAGES[status], "limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
    response = TemplateResponse(request, f"{status}.html", context)
    response.status_code = status
    return response.render()


@requires_csrf_token
def bad_request(request, exception=None):
    # Django reports a body over DATA_UPLOAD_MAX_MEMORY_SIZE as a SuspiciousOperation (400); the
    # contract says 413, which also tells the client that retrying the same body cannot help.
    if isinstance(exception, RequestDataTooBig):
        return _page(request, 413)
    return _page(request, 400)


@requires_csrf_token
def permission_denied(request, exception=None):
    return _page(request, 403)


@requires_csrf_token
def page_not_found(request, exception=None):
    return _page(request, 404)


@requires_csrf_token
def server_error(request):
    if _is_api(request):
        return _json(500)
    # No request context: whatever broke (database, a context processor) must not break this page too.
    return HttpResponseServerError(loader.get_template("500.html").render({"message": MESSAGES[500]}))
