"""Helpers for tests that open WebSockets in-process (``WebsocketCommunicator`` on the real ASGI app,
the real channel layer in Redis and the test database)."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from crucible.asgi import application

SITE = "http://127.0.0.1:8000"


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def open_socket(
    path: str,
    *,
    user=None,
    token: str | None = None,
    origin: str | None = SITE,
    host: str = "127.0.0.1:8000",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[WebsocketCommunicator, bool]:
    """Open ``path`` as a browser on ``origin`` would (Host ``host``, ``user``'s session cookie), or as
    a script with ``token`` and ``origin=None``; returns the communicator and whether it was accepted."""
    sent = [(b"host", host.encode())] + list(headers or [])
    if origin is not None:
        sent.append((b"origin", origin.encode()))
    if user is not None:
        sent.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    if token is not None:
        sent.append((b"authorization", f"Token {token}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=sent)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def close_code(communicator: WebsocketCommunicator, timeout: float = 5) -> int:
    """The code the server closed with, skipping any message sent before the close."""
    while True:
        message = await communicator.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            await communicator.disconnect()  # the client side of the closing handshake
            return message.get("code")
        assert message["type"] == "websocket.send", message


async def feed_from(address: str, token: str) -> int | None:
    """Open the operators' alerts feed as a script at client ``address`` with ``token``; the close code,
    or None if it was served."""
    communicator = WebsocketCommunicator(
        application,
        "/ws/alerts/",
        headers=[(b"host", b"127.0.0.1:8000"), (b"authorization", f"Token {token}".encode())],
    )
    communicator.scope["client"] = [address, 50000]
    connected, code = await communicator.connect(timeout=5)
    if not connected:
        return code
    first = await communicator.receive_output(timeout=5)
    if first["type"] == "websocket.close":
        return first.get("code")
    await communicator.disconnect()  # the feed spoke: it is served
    return None
