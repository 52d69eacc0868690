"""Writing a WebSocket message straight to the web server's connection, framed once for every viewer.

A consumer's ``send`` goes through Channels and Daphne (``Server.handle_reply``, the protocol's
``handle_reply`` and ``serverSend``) and autobahn frames the text anew for every connection. For a
live line that a hundred viewers of a run are sent, ``Frame`` holds the text framed once (autobahn's
``PreparedMessage``, made for broadcasting) and ``direct_writer`` writes it to one connection with
autobahn's ``sendPreparedMessage``, which is what ``serverSend`` ends in. It applies only to the
application instances Daphne made (their ``send`` is Daphne's ``handle_reply`` for one protocol);
for any other server, or Channels' test communicator, there is no direct writer and the consumer
sends as usual. A browser's connection sends through Channels' session wrapper, which does nothing
for a ``websocket.send`` (it saves the session and sets cookies on HTTP responses only): it is
looked through.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable

from autobahn.websocket.protocol import PreparedMessage
from channels.sessions import InstanceSessionWrapper
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol

log = logging.getLogger(__name__)

Writer = Callable[["Frame"], bool]


class Frame:
    """A text message and, made the first time a direct writer needs it, its WebSocket frame."""

    __slots__ = ("text", "_prepared")

    def __init__(self, text: str) -> None:
        self.text = text
        self._prepared: PreparedMessage | None = None

    def prepared(self) -> PreparedMessage:
        if self._prepared is None:
            # A server's frames are not masked; Daphne negotiates no compression.
            self._prepared = PreparedMessage(self.text.encode("utf-8"), False, False, False)
        return self._prepared


class Frames:
    """Frames of events that many viewers of a process are sent, each encoded once: by a key that
    names the event, at most ``size`` kept (when full, all are forgotten: those events were sent long ago)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._frames: dict = {}

    def get(self, key, event: dict) -> Frame:
        frame = self._frames.get(key)
        if frame is None:
            if len(self._frames) >= self.size:
                self._frames.clear()
            frame = self._frames[key] = Frame(json.dumps(event))
        return frame


_said = False


def direct_writer(send) -> Writer | None:
    """A function that writes a ``Frame`` to the connection ``send`` (an ASGI send callable) answers,
    and says whether it did (False once the connection is not open); None when ``send`` is not,
    under the session wrapper, Daphne's ``handle_reply`` for a WebSocket connection."""
    return writer_for(unwrapped(send))


def unwrapped(send):
    """``send`` without Channels' session wrappers, which pass a ``websocket.send`` on unchanged."""
    while (
        isinstance(wrapper := getattr(send, "__self__", None), InstanceSessionWrapper)
        and getattr(send, "__func__", None) is InstanceSessionWrapper.send
        and "websocket.send" not in wrapper.save_message_types
        and "websocket.send" not in wrapper.cookie_response_message_types
    ):
        send = wrapper.real_send
    return send


def writer_for(send) -> Writer | None:
    """The direct writer of Daphne's ``send`` for one WebSocket connection, else None."""
    global _said
    func = getattr(send, "func", None)
    server = getattr(func, "__self__", None)
    args = getattr(send, "args", ())
    if not (
        isinstance(send, functools.partial)
        and isinstance(server, Server)
        and getattr(func, "__func__", None) is Server.handle_reply
        and len(args) == 1
        and isinstance(args[0], WebSocketProtocol)
        and not send.keywords
    ):
        return None
    protocol = args[0]

    def write(frame: Frame) -> bool:
        # What Server.handle_reply checks, then what serverSend does once the connection is open.
        if protocol.state != protocol.STATE_OPEN:
            return False
        state = server.connections.get(protocol)
        if state is None or state.get("disconnected"):
            return False
        protocol.sendPreparedMessage(frame.prepared())
        return True

    if not _said:
        _said = True
        log.info("live WebSocket messages are framed once and written directly to each connection")
    return write
