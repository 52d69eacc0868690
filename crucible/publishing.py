"""The one event loop every publish to the channel layer from sync code runs on (a daemon thread).

Used by the publishers of evaluations and sessions (each the only code of its app that talks to the
channel layer).
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
