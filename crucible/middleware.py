"""Security headers on every response, the request being served (for audit entries from signals), and a
clean 400 for URLs that carry a NUL character.

Django's SecurityMiddleware already sets X-Content-Type-Options, Referrer-Policy, HSTS (when
SECURE_HSTS_SECONDS > 0) and Cross-Origin-Opener-Policy, and XFrameOptionsMiddleware sets X-Frame-Options;
this adds a strict Content-Security-Policy (no inline script or style) and a Permissions-Policy.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import JsonResponse
from django.template.response import TemplateResponse

_current_request: contextvars.ContextVar = contextvars.ContextVar("crucible_current_request", default=None)

PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "payment",
        "usb",
        "interest-cohort",
    )
)


def current_request():
    """The HttpRequest this thread/task is serving, or None (management commands, jobs)."""
    return _current_request.get()


def content_security_policy(request, extra: dict[str, list[str]] | None = None) -> str:
    """The policy for one response; ``extra`` adds sources to directives (see ``csp_update``)."""
    try:
        host = request.get_host()
    except DisallowedHost:
        host = None
    connect = ["'self'"]
    if host:
        # Browsers differ on whether 'self' covers ws:/wss:, so name this host's WebSocket origin outright.
        connect.append(f"{'wss' if request.is_secure() else 'ws'}://{host}")
    directives: dict[str, list[str]] = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": connect,
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    for name, sources in (extra or {}).items():
        directives.setdefault(name, []).extend(sources)
    policy = "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())
    if request.is_secure():
        policy += "; upgrade-insecure-requests"
    return policy


def csp_update(**directives: list[str]) -> Callable:
    """Decorate a view to loosen its policy, e.g. ``csp_update(script_src=["https://cdn.example"])``."""
    extra = {name.replace("_", "-"): list(sources) for name, sources in directives.items()}

    def decorator(view):
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response._csp_extra = extra
            return response

        wrapped.__name__ = getattr(view, "__name__", "view")
        wrapped.__doc__ = view.__doc__
        for attr in ("csrf_exempt", "cls", "initkwargs", "view_class", "view_initkwargs"):
            if hasattr(view, attr):
                setattr(wrapped, attr, getattr(view, attr))
        return wrapped

    return decorator


class SecurityHeadersMiddleware:
    """Adds Content-Security-Policy and Permissions-Policy; remembers the current request for audit."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            response = self.get_response(request)
        finally:
            _current_request.reset(token)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(
                request, getattr(response, "_csp_extra", None)
            )
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.setdefault("X-Content-Type-Options", "nosniff")
        response.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        if response.status_code == 429:
            # allauth's sign-in throttle answers 429 without saying when to come back.
            response.setdefault("Retry-After", "60")
        return response


def nul_in_url(request) -> str | None:
    """Where the URL carries a NUL character (``%00``), or None.

    PostgreSQL text cannot hold NUL, so a NUL reaching a query (``?q=a%00b``, an admin filter, the
    artifact name in ``…/artifacts/secret.txt%00.png``) would end as a database error. No name, search
    or filter in Crucible can contain one, so the request is refused before any view runs.
    """
    if "\x00" in request.path:
        return "The URL path must not contain NUL characters (%00)."
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            return "Query parameters must not contain NUL characters (%00)."
    return None


class RefuseNulMiddleware:
    """Answers 400 with a message (JSON under /api/, the error page elsewhere) when the URL carries a NUL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        message = nul_in_url(request)
        if message is None:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message, "error": message}, status=400)
        response = TemplateResponse(request, "400.html", {"status": 400, "message": message}, status=400)
        return response.render()
