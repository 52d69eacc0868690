"""Database calls of WebSocket consumers, run in a pool of threads.

Channels' ``database_sync_to_async`` is thread-sensitive by default: every call of every
connection of a Daphne process runs on one single thread, one after another. A thousand viewers
connecting at once (each connect checks its token, its right to the stream and reads the stored
output) then queue behind each other for longer than Daphne's handshake timeout, and are dropped.
These calls share nothing between threads (each opens and closes its own connection, as
``DatabaseSyncToAsync`` does around every call), so they run in the event loop's thread pool
instead (``ASGI_THREADS`` threads, asgiref's setting; by default min(32, CPUs + 4)).
"""

from __future__ import annotations

from channels.db import DatabaseSyncToAsync


def pooled_db(func):
    """``database_sync_to_async``, not thread-sensitive: the call runs on any of the pool's threads."""
    return DatabaseSyncToAsync(func, thread_sensitive=False)
