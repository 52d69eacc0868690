"""WebSocket routes. Authentication (token header, else session) wraps them here; the origin
check for browser connections wraps everything in ``crucible.asgi``. Any other path is closed with
4404 by the last route."""

from django.urls import path, re_path

from apps.console.consumers import OperatorAlertsConsumer
from apps.evaluations.consumers import EvaluationConsumer
from apps.sessions.consumers import SessionConsumer
from apps.tasks.consumers import BatchConsumer
from crucible.ws_auth import TokenAuthMiddlewareStack, UnknownPathConsumer

# The id is matched loosely and validated in the consumer, so a malformed id closes with 4404
# like any other unknown evaluation instead of failing the route.
websocket_urlpatterns: list = [
    path("ws/evaluations/<str:evaluation_id>/", TokenAuthMiddlewareStack(EvaluationConsumer.as_asgi())),
    path("ws/alerts/", TokenAuthMiddlewareStack(OperatorAlertsConsumer.as_asgi())),
    path("ws/batches/<str:batch_id>/", TokenAuthMiddlewareStack(BatchConsumer.as_asgi())),
    path("ws/sandboxes/<str:session_id>/", TokenAuthMiddlewareStack(SessionConsumer.as_asgi())),
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
