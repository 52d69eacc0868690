"""Removing a finished run's sandbox off the worker's critical path.

A run records its verdict before its sandbox is removed (``runner.run``'s ``on_result``); the
engine's removal (about 60 ms under runc, 130-180 ms under gVisor) then only delays the worker's
next job. A worker installs a ``Remover`` (``install``): the runner hands it the sandbox
(``remove``) and the worker takes its next job while a thread of the worker removes the container.

What holds, as before:
- the run's record is complete before its sandbox is handed over, and a sandbox that a limit, a
  cancel or a stop ended was killed already. Only a program that exited by itself may have left
  processes behind in it; they run on, inside the sandbox and under all of its limits, until the
  remover kills them with the container (the engine's kill is most of a removal's time: killing
  first, here, would save nothing), as they ran on during the removal before;
- at most ``capacity`` (``SANDBOX_REMOVE_BEHIND``) sandboxes wait per worker: when that many
  wait, the run removes its own, so containers never pile up faster than the engine removes them;
- the worker waits for the removals when it stops (``drain``, from ``register_death``);
- a worker that dies with removals waiting leaves containers of runs that are no longer running:
  the reconciler's orphan sweep removes them (``reconciler.remove_orphan_containers``), as it
  removes a container whose removal failed.

Without an installed remover (a test calling ``runner.run``, a session host, a forked work horse
whose parent holds the thread), and for anything but an evaluation's sandbox (a self-check's
canary), ``remove`` removes at once, as ``Sandbox.remove`` always did.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

from apps.sandboxing.sandbox import Sandbox

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0

_installed: Remover | None = None


class Remover:
    """Removes handed-over sandboxes on one thread of this process, at most ``capacity`` not removed yet."""

    def __init__(self, capacity: int, name: str = "sandbox-remover"):
        self.capacity = capacity
        self.name = name
        self.pid = os.getpid()
        self.removed = 0
        self._waiting: queue.SimpleQueue[Sandbox | None] = queue.SimpleQueue()
        self._pending = 0  # handed over and not removed yet (the one being removed included)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.capacity > 0:
            self._thread = threading.Thread(target=self._remove_forever, name=self.name, daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        """Whether handed-over sandboxes are removed here: started, and in the process that started it."""
        return self._thread is not None and self._thread.is_alive() and os.getpid() == self.pid

    @property
    def pending(self) -> int:
        """Sandboxes handed over and not removed yet."""
        return self._pending

    def hand_over(self, sandbox: Sandbox) -> bool:
        """Queue ``sandbox`` for removal; False when the caller must remove it (full, or not running)."""
        if not self.running:
            return False
        with self._lock:
            if self._pending >= self.capacity:
                return False
            self._pending += 1
        self._waiting.put(sandbox)
        return True

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> int:
        """Remove what waits and stop the thread (at most ``timeout_s``: a stopping worker has seconds
        before its process manager kills it; what is left then is the reconciler's). Returns how many
        sandboxes this remover removed in all."""
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._waiting.put(None)
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("%s: removals still waiting when it stopped; the reconciler removes them", self.name)
                return self.removed
        while True:  # a thread that was never started (or died) left these
            try:
                sandbox = self._waiting.get_nowait()
            except queue.Empty:
                return self.removed
            if sandbox is not None:
                self._remove(sandbox)

    def _remove_forever(self) -> None:
        while True:
            sandbox = self._waiting.get()
            if sandbox is None:
                return
            self._remove(sandbox)

    def _remove(self, sandbox: Sandbox) -> None:
        try:
            sandbox.remove()  # never raises for the engine: what it cannot remove is the reconciler's
            self.removed += 1
        except Exception:
            log.exception("removing sandbox %s", sandbox.container_id[:12])
        finally:
            with self._lock:
                self._pending -= 1


def install(remover: Remover | None) -> None:
    """Make ``remover`` the one this process's runs hand their sandboxes to (None: remove at once)."""
    global _installed
    _installed = remover


def installed() -> Remover | None:
    return _installed


def remove(sandbox: Sandbox, *, behind: bool = False) -> None:
    """Remove ``sandbox`` now; with ``behind``, in a worker with a ``Remover``, hand it over to be
    removed behind (now, when the remover has ``capacity`` waiting already).

    Only an evaluation's sandbox may be removed behind: the reconciler's orphan sweep removes a
    container whose evaluation is not running, should this worker die before its remover did (a
    self-check canary's, say, is not an evaluation's and would be left)."""
    remover = _installed
    if not behind or remover is None or not remover.hand_over(sandbox):
        sandbox.remove()
