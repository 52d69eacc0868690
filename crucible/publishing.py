"""How sync code publishes to the channel layer: ``group_send``.

Used by the publishers of evaluations and sessions (each the only code of its app that talks to the
channel layer). The pub/sub layer (``crucible.channel_layer``) takes a message from sync code as it
is, on a blocking Redis client (one PUBLISH, no event loop); any other layer's ``group_send`` runs on
one event loop per process, in a daemon thread (``publishing``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading

PUBLISH_TIMEOUT_S = 5.0


class _PublishingLoop:
    """One event loop per process, in a daemon thread, that every publish from sync code runs on.

    ``async_to_sync`` makes a new event loop for each call, and the Redis channel layer new
    connections for each loop: about 3 ms a message, paid by the worker for every chunk of output.
    On one loop the connections are kept: about 0.6 ms. Each caller waits for its own publish, so
    messages from one thread reach the layer in the order they were published. A forked child (RQ's
    work horse) starts its own loop: a thread does not survive ``fork``.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._loop = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-layer-publisher", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, coroutine) -> None:
        """Run ``coroutine`` on the loop and wait for it (at most ``PUBLISH_TIMEOUT_S``)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        try:
            future.result(timeout=PUBLISH_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


publishing = _PublishingLoop()


def group_send(layer, group: str, message: dict) -> None:
    """Send ``message`` to ``group`` from sync code and wait for it (``PUBLISH_TIMEOUT_S`` at most):
    messages from one thread reach the layer in the order they were sent."""
    blocking = getattr(layer, "group_send_blocking", None)
    if blocking is not None:
        blocking(group, message, timeout_s=PUBLISH_TIMEOUT_S)
    else:
        publishing.run(layer.group_send(group, message))
