"""One ASGI application for HTTP and WebSocket, served by Daphne."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from crucible.routing import websocket_urlpatterns  # noqa: E402


class BrowserOriginValidator(OriginValidator):
    """Refuse WebSocket connections that a browser opened from another site.

    Browsers always send ``Origin`` on a WebSocket handshake, and it must name one of our hosts
    (cross-site WebSocket hijacking rides on the session cookie). Clients that are not browsers
    (the CLI, scripts) send none; they can only authenticate with a token header, which no web
    page can set on a WebSocket, so a missing Origin is no cross-site risk.
    """

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or self.validate_origin(parsed_origin)


def _allowed_origins() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = ["localhost", ".localhost", "127.0.0.1", "[::1]"]
    return hosts


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": BrowserOriginValidator(URLRouter(websocket_urlpatterns), _allowed_origins()),
    }
)
