"""The web server process's garbage collector: long-lived objects are kept out of its full passes.

A Daphne process with a thousand WebSocket viewers holds 100 000+ tracked objects that live as long
as their connections. CPython's full pass walks every one of them whenever a quarter as many new
objects have been promoted since the last one: every 5-12 s, 90-120 ms each on a 2-core machine,
and up to 300 ms when many connections close together. Every line in flight in that process waits.

``FreezeSurvivors`` (a ``gc.callbacks`` entry) freezes what survived each full pass, so the next ones
walk only what was promoted since: objects that keep living are walked once, not every few seconds.
Cycles among frozen objects that die later (a closed connection's) are not collected while frozen,
so every ``thaw_every_s`` seconds the frozen objects are thawed and the next full pass walks them
all once, collects what died since, and freezes the survivors again. What a process can hold back
this way is bounded by what becomes cyclic garbage in that interval.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class FreezeSurvivors:
    """Freeze the survivors of every full pass; thaw them all at most every ``thaw_every_s`` seconds."""

    def __init__(self, thaw_every_s: float, *, clock: Callable[[], float] = time.monotonic):
        self.thaw_every_s = thaw_every_s
        self._clock = clock
        self._frozen_since = clock()
        self._thawed = False
        self.thaws = 0

    def __call__(self, phase: str, info: dict) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self._clock()
        if not self._thawed and now - self._frozen_since >= self.thaw_every_s:
            # This pass walked only the young; the next one walks everything that was frozen too.
            gc.unfreeze()
            self._thawed = True
            self.thaws += 1
            return
        gc.freeze()
        if self._thawed:
            self._thawed = False
            self._frozen_since = now


_installed: FreezeSurvivors | None = None


def install(thaw_every_s: float) -> FreezeSurvivors:
    """Freeze what is alive now (the process's modules, settings and apps) and keep freezing the
    survivors of full passes (once per process; 0 only freezes what is alive now)."""
    global _installed
    gc.freeze()
    if _installed is None and thaw_every_s > 0:
        _installed = FreezeSurvivors(thaw_every_s)
        gc.callbacks.append(_installed)
    return _installed
