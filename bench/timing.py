"""Timing the steps of a run from inside: wrap named functions so each call adds its wall time to a dict.

Shared by ``breakdown.py`` and ``reuse_breakdown.py``. Times are inclusive (a step nested in another is
in both). With ``apart_threads``, time spent outside the main thread (a reset in the background, which
overlaps the next sample) is counted under ``(thread) <label>``.
"""

from __future__ import annotations

import inspect
import threading
import time
from importlib import import_module


def time_calls(timed: dict[str, list[str]], spent: dict[str, float], *, apart_threads: bool = False) -> None:
    """Wrap each ``timed`` path's attributes (a module or ``module.Class``) so calls add to ``spent``."""

    def wrap(owner, attr: str, label: str) -> None:
        original = inspect.getattr_static(owner, attr)
        bound = original.__func__ if isinstance(original, classmethod | staticmethod) else original

        def timed_call(*a, **kw):
            started = time.perf_counter()
            try:
                return bound(*a, **kw)
            finally:
                main = threading.current_thread() is threading.main_thread()
                where = label if main or not apart_threads else f"(thread) {label}"
                spent[where] = spent.get(where, 0.0) + time.perf_counter() - started

        if isinstance(original, classmethod):
            timed_call = classmethod(timed_call)
        elif isinstance(original, staticmethod):
            timed_call = staticmethod(timed_call)
        setattr(owner, attr, timed_call)

    for path, attrs in timed.items():
        module_path, _, class_name = path.rpartition(".")
        try:
            owner = getattr(import_module(module_path), class_name)
        except (ImportError, AttributeError):
            owner = import_module(path)
        for attr in attrs:
            wrap(owner, attr, f"{path.rsplit('.', 1)[-1]}.{attr}")
