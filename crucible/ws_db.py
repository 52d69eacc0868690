"""Database calls of WebSocket consumers, run on a few threads that keep their connections.

Channels' ``database_sync_to_async`` is thread-sensitive by default: every call of every
connection of a Daphne process runs on one single thread, one after another. A thousand viewers
connecting at once (each connect checks its token, its right to the stream and reads the stored
output) then queue behind each other for longer than Daphne's handshake timeout, and are dropped.
These calls share nothing between threads, so they run on a small pool of their own
(``WEBSOCKET_DB_THREADS`` per Daphne process).

Each of those threads keeps its database connection between calls (for at most ``KEEP_S``; checked
before each reuse, as ``CONN_HEALTH_CHECKS`` does for requests). The web's requests close theirs
after each request (``DATABASE_CONN_MAX_AGE=0``), and so did these calls: a thousand viewers, each
re-checking its permission, reading its stream's row at every heartbeat and its stored output,
opened and closed hundreds of PostgreSQL connections a second (a backend forked for each), most of
one Daphne process's CPU and more of PostgreSQL's. Kept, they cost a query each. A thread idle for
``IDLE_S`` closes its connection (and waits on), so a quiet process holds no connection; the threads
are at most ``WEBSOCKET_DB_THREADS``, so neither are the connections.
"""

from __future__ import annotations

import concurrent.futures
import functools
import queue
import threading

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import close_old_connections, connections

KEEP_S = 60.0  # a kept connection is closed (and a new one opened) after this long
IDLE_S = 10.0  # a thread with nothing to do for this long closes its connection
_STOP = object()


class KeptConnectionsExecutor(concurrent.futures.Executor):
    """At most ``threads`` threads, started on demand, each keeping its own database connections
    between the calls it runs; a thread idle for ``idle_s`` closes them (and waits on)."""

    def __init__(self, threads: int, idle_s: float = IDLE_S):
        self.size = threads
        self.idle_s = idle_s
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._jobs.put((future, fn, args, kwargs))
            if self._jobs.qsize() > self._idle and len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, name="ws-db", daemon=True)
                self._threads.add(thread)
                self._idle += 1  # until it takes its first job
                thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End every thread (each closes its connections first); new calls start new threads."""
        with self._lock:
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()

    def _next(self):
        """The next job, or None when this thread should end (told to stop). A thread idle for
        ``idle_s`` closes its connections and goes on waiting: it is not ended, because starting one
        makes the event loop that submits wait until the new thread runs, which took tens of
        milliseconds at a time on a busy machine (a storm of handshakes, README). The thread counts
        as idle until it has a job."""
        try:
            job = self._jobs.get(timeout=self.idle_s)
        except queue.Empty:
            connections.close_all()  # nothing to do: hold no connection meanwhile
            job = self._jobs.get()
        with self._lock:
            self._idle -= 1
            if job is _STOP:
                self._threads.discard(threading.current_thread())
                return None
        return job

    def _work(self) -> None:
        _keep_connections()
        try:
            while (job := self._next()) is not None:
                future, fn, args, kwargs = job
                del job
                if not future.set_running_or_notify_cancel():
                    with self._lock:
                        self._idle += 1
                    continue
                try:
                    result, error = fn(*args, **kwargs), None
                except BaseException as exc:  # noqa: BLE001 (handed to the awaiting caller)
                    result, error = None, exc
                with self._lock:
                    self._idle += 1  # before the caller hears back, so its next call finds this thread
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
                del future, fn, args, kwargs, result, error
        finally:
            connections.close_all()


def _keep_connections() -> None:
    """This thread's connections live for ``KEEP_S`` instead of one call (its own copy of the settings:
    Django checks ``CONN_MAX_AGE``, errors and health around every ``DatabaseSyncToAsync`` call).
    Not borrowed from the web server's pool (``DATABASE_POOL_MAX``): a borrowed connection goes back
    at every call and is checked again at the next (a round trip per call, four per permission check)."""
    for alias in connections:
        connection = connections[alias]
        settings_dict = connection.settings_dict
        options = {key: value for key, value in settings_dict["OPTIONS"].items() if key != "pool"}
        connection.settings_dict = {**settings_dict, "OPTIONS": options, "CONN_MAX_AGE": KEEP_S}


_executors: dict[str, KeptConnectionsExecutor] = {}
_executor_lock = threading.Lock()
WEBSOCKETS = "websockets"  # the consumers' calls (``WEBSOCKET_DB_THREADS`` threads)
PROBES = "probes"  # the health endpoint's checks (one thread: never queued behind the consumers')


def executor(purpose: str = WEBSOCKETS) -> KeptConnectionsExecutor:
    """The process's executor for ``purpose`` (made on first use)."""
    with _executor_lock:
        if purpose not in _executors:
            _executors[purpose] = KeptConnectionsExecutor(settings.WEBSOCKET_DB_THREADS if purpose == WEBSOCKETS else 1)
        return _executors[purpose]


def close_kept_connections() -> None:
    """End every executor's threads and close their connections now (tests: before the test database is dropped)."""
    for kept in list(_executors.values()):
        kept.shutdown(wait=True)


class _OnKeptConnections(DatabaseSyncToAsync):
    """``database_sync_to_async`` on the process's ``KeptConnectionsExecutor``."""

    def __init__(self, func, purpose: str = WEBSOCKETS):
        super().__init__(func, thread_sensitive=False)
        self._purpose = purpose

    async def __call__(self, *args, **kwargs):
        self._executor = executor(self._purpose)
        return await super().__call__(*args, **kwargs)


def pooled_db(func=None, *, purpose: str = WEBSOCKETS):
    """``database_sync_to_async``, not thread-sensitive: the call runs on any of the kept-connection threads.

    The kept connection is checked (``close_old_connections``: health, age, errors) in the call itself.
    Channels checks in its ``thread_handler``, outside the context the call runs in, and that did not
    reach the connection the call uses: one PostgreSQL had dropped was used again, and the call
    failed, once the thread had served calls of several tests.

    ``purpose``: whose threads run it (``PROBES``: the health endpoint's own thread)."""
    if func is None:
        return functools.partial(pooled_db, purpose=purpose)

    @functools.wraps(func)
    def on_a_checked_connection(*args, **kwargs):
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return _OnKeptConnections(on_a_checked_connection, purpose)
