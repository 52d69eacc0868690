"""The health endpoints answered in the web server's event loop, before Django's middleware.

A load balancer's or an orchestrator's probe must be answered while the web tier is at its busiest
(a thousand viewers connecting or leaving at once). Through Django, one GET of ``/api/v1/health/``
hops seven times between Daphne's event loop and the single thread Django's sync code runs on (the
request signals, the middleware, the view, the rendering, the close), and each hop waits for a
turn of a loop that handshakes keep busy: 1-2 s per answer during such storms (README, Benchmarks).
Here a plain probe is answered at once (liveness) or after one hop to a thread of its own that
keeps its database connection (readiness, ``crucible.ws_db.PROBES``), with the same body, status
and security headers as the views (``apps.console.api.views``), which answer everything else.

A plain probe is a GET or HEAD of exactly one of the two paths, without a query string, for a host
in ``ALLOWED_HOSTS``, accepting JSON (no ``Accept``, or only ``application/json``, ``application/*``
or ``*/*``), and over HTTPS where HTTP is redirected (``SECURE_SSL_REDIRECT``). The rest (the
browsable API, ``?format=``, a wrong host, a redirect to HTTPS, another method) is Django's, so it
is answered exactly as before. Concurrent readiness probes share one assessment; should it fail
(the assessment itself never raises, but its thread might), the view answers instead.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.urls import reverse

from apps.console import health
from crucible.middleware import PERMISSIONS_POLICY
from crucible.ws_auth import SharedAnswers, handshake_header
from crucible.ws_db import PROBES, pooled_db
from crucible.ws_origin import allowed_host, connection_scheme

log = logging.getLogger(__name__)

JSON_MEDIA_TYPES = {"application/json", "application/*", "*/*"}
# JSON needs no sources at all: nothing on a probe's answer may load or frame anything.
CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"

assessments = SharedAnswers()  # readiness probes that arrive together share one assessment


@pooled_db(purpose=PROBES)
def _readiness() -> tuple[int, dict]:
    return health.report()


def _secure(scope) -> bool:
    return connection_scheme(scope) == "https"


def _accepts_json(scope) -> bool:
    accept = handshake_header(scope, b"accept")
    if accept is None or not accept.strip():
        return True
    ranges = [part.split(";", 1)[0].strip().lower() for part in accept.decode("latin-1").split(",")]
    return all(media in JSON_MEDIA_TYPES for media in ranges if media)


def plain_probe(scope) -> str | None:
    """Which probe ``scope`` is ("live" or "ready") if this module answers it, else None (Django does)."""
    if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or scope.get("query_string"):
        return None
    probe = {reverse("api-health-live"): "live", reverse("api-health"): "ready"}.get(scope.get("path"))
    if probe is None or not _accepts_json(scope) or allowed_host(scope) is None:
        return None
    if settings.SECURE_SSL_REDIRECT and not _secure(scope):
        return None
    return probe


def headers(body: bytes, secure: bool, *, no_store: bool) -> list[tuple[bytes, bytes]]:
    """The answer's headers: what the views' answer carries (content, caching, the security headers)."""
    pairs = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Vary", "Accept"),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("Permissions-Policy", PERMISSIONS_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", settings.X_FRAME_OPTIONS),
        ("Referrer-Policy", settings.SECURE_REFERRER_POLICY),
        ("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]
    if no_store:
        pairs.append(("Cache-Control", "no-store"))
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        pairs.append(("Strict-Transport-Security", hsts))
    return [(name.lower().encode(), value.encode()) for name, value in pairs]


def probes_first(app):
    """ASGI middleware: answer plain probes here (see the module docstring), pass everything else to ``app``."""

    async def application(scope, receive, send):
        probe = plain_probe(scope)
        if probe is None:
            return await app(scope, receive, send)
        if probe == "live":
            status, body = 200, {"status": "ok"}
        else:
            try:
                status, body = await assessments.get("readiness", _readiness, max_age=0.0)
            except Exception:
                log.exception("health: the probe's assessment failed; Django's view answers instead")
                return await app(scope, receive, send)
        encoded = json.dumps(body, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers(encoded, _secure(scope), no_store=probe == "ready"),
            }
        )
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else encoded})

    return application
