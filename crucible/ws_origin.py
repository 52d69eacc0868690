"""Cross-site WebSocket hijacking: which browser pages may open a WebSocket to this site.

Browsers send the session cookie with a WebSocket handshake whatever page opens it, and the
same-origin policy does not apply to WebSockets: the server must check ``Origin`` itself. An origin
is a scheme, a host and a port, so a page on ``http://127.0.0.1:9999/`` is another site than this
one on ``http://127.0.0.1:8000/`` although both share the cookies of 127.0.0.1. As Django's CSRF
check does, the site's own origin is the one the browser addressed: the handshake's scheme and
``Host`` (which must be one of ``ALLOWED_HOSTS``); ``CSRF_TRUSTED_ORIGINS`` adds others.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

from crucible.ws_auth import handshake_header

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin such as ``https://example.com:8443``; None if it is not one."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def connection_scheme(scope) -> str:
    """``https`` when the request (an HTTP request or a WebSocket handshake) came over TLS, or
    through the trusted TLS proxy (``SECURE_PROXY_SSL_HEADER``), else ``http``: as Django sees it."""
    if scope.get("scheme") in ("https", "wss"):
        return "https"
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        name = proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        value = handshake_header(scope, name)
        if value is not None and value.decode("latin-1").split(",")[0].strip() == proxy_header[1]:
            return "https"
    return "http"


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def allowed_host(scope) -> str | None:
    """The request's ``Host`` if it names one of ``ALLOWED_HOSTS`` (as Django checks it), else None."""
    host = handshake_header(scope, b"host")
    if host is None:
        return None
    host = host.decode("latin-1")
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    return host


def _own_origin(scope) -> tuple[str, str, int | None] | None:
    """This site's origin as the browser addressed it: the handshake's scheme and ``Host`` (an allowed host)."""
    host = allowed_host(scope)
    if host is None:
        return None
    return _origin(f"{connection_scheme(scope)}://{host}")


def _trusted(origin: tuple[str, str, int | None]) -> bool:
    """``origin`` is one of ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` also covers subdomains)."""
    scheme, host, port = origin
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in entry
        trusted = _origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if trusted is None or trusted[0] != scheme or trusted[2] != port:
            continue
        if is_same_domain(host, "." + trusted[1]) if wildcard else host == trusted[1]:
            return True
    return False


def origin_allowed(scope) -> bool:
    """May this handshake go on? Yes without ``Origin`` (not a browser: the CLI and scripts, which can
    only authenticate with a token header that no web page can set on a WebSocket); otherwise only
    when scheme, host and port equal this site's own or a trusted origin's. A page on another port
    or scheme of the same host is another origin (it could ride on the session cookie)."""
    header = handshake_header(scope, b"origin")
    if header is None:
        return True
    origin = _origin(header.decode("latin-1"))
    if origin is None:  # "null" (sandboxed frames, file://) or garbage
        return False
    return origin == _own_origin(scope) or _trusted(origin)


class SameOriginValidator:
    """ASGI middleware: refuse (HTTP 403 at the handshake) a browser connection from another origin."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
