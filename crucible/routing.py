"""WebSocket routes (the live log stream is added by the evaluations app)."""

websocket_urlpatterns: list = []
