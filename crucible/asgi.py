"""One ASGI application for HTTP and WebSocket, served by Daphne."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
if not settings.configured:
    # The web server's process (its settings are read just below) borrows database connections from
    # a pool (``DATABASE_POOL_MAX``, see settings). A process that imports this module after reading
    # its settings (tests) is left as it is, and so are the processes it starts.
    os.environ.setdefault("DATABASE_POOL_MAX", "8")
    # And it sends what it writes at once rather than on the event loop's next turn.
    from crucible import daphne_writes

    daphne_writes.install()
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from crucible.routing import websocket_urlpatterns  # noqa: E402
from crucible.ws_origin import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Browsers must come from this site's own origin (scheme, host, port) or a trusted one.
        "websocket": SameOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
