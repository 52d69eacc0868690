"""One ASGI application for HTTP and WebSocket, served by Daphne."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
_web_server_process = not settings.configured
if _web_server_process:
    # The web server's process (its settings are read just below) borrows database connections from
    # a pool (``DATABASE_POOL_MAX``, see settings). A process that imports this module after reading
    # its settings (tests) is left as it is, and so are the processes it starts.
    os.environ.setdefault("DATABASE_POOL_MAX", "8")
    # And it sends what it writes at once rather than on the event loop's next turn, and formats
    # autobahn's debug message of each WebSocket connection only when it is logged.
    from crucible import autobahn_debug, daphne_writes

    daphne_writes.install()
    autobahn_debug.install()
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.console.probes import probes_first  # noqa: E402
from crucible.routing import websocket_urlpatterns  # noqa: E402
from crucible.ws_origin import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Health probes are answered in the event loop, even while it is at its busiest.
        "http": probes_first(django_asgi_app),
        # Browsers must come from this site's own origin (scheme, host, port) or a trusted one.
        "websocket": SameOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)

if _web_server_process:
    # What is loaded by now (Django, every app, the libraries: hundreds of thousands of objects) lives
    # as long as the process, and so do the viewers' connections: frozen, the collector's full passes
    # no longer walk them. With a thousand viewers, those passes stopped a web process for 90-400 ms
    # every 5-20 s (measured with gc.callbacks), and every line in flight waited (README, Benchmarks).
    from crucible import web_gc

    web_gc.install(settings.WEB_GC_THAW_S)
