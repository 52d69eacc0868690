"""Which engine runtime sandboxes get: gVisor (``runsc``) when the engine has it, else ``runc``.

``SANDBOX_RUNTIME`` is ``auto`` (the default), or the name of a runtime the operator forces
(``runc``, ``runsc``). ``chosen()`` resolves ``auto`` against the runtimes the engine reports,
cached for ``CACHE_SECONDS``; when the engine cannot be asked it raises ``RuntimeUnknown`` rather
than guess, so a sandbox never silently gets weaker isolation than the engine offers. A forced
runtime is passed to the engine as it is: if the engine lacks it, the engine refuses the container
and the run ends in ``error`` (fail closed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from apps.sandboxing import engine

AUTO = "auto"
RUNC = "runc"
GVISOR = "runsc"
CACHE_SECONDS = 30.0

_lock = threading.Lock()
_cache: dict[str, tuple[float, frozenset[str]]] = {}


class RuntimeUnknown(Exception):
    """The engine could not say which runtimes it has, so ``auto`` cannot be resolved."""


def available(*, fresh: bool = False) -> frozenset[str]:
    """The runtimes the engine has registered (``docker info``), cached per engine address."""
    key = settings.DOCKER_HOST
    with _lock:
        cached = _cache.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        names = frozenset(engine.client().info().get("Runtimes") or {})
    except Exception as exc:
        raise RuntimeUnknown(f"the engine did not list its runtimes: {type(exc).__name__}: {exc}") from exc
    with _lock:
        _cache[key] = (time.monotonic(), names)
    return names


def chosen() -> str:
    """The runtime a sandbox is created with now. Raises ``RuntimeUnknown`` (``auto`` only)."""
    configured = settings.SANDBOX_RUNTIME
    if configured != AUTO:
        return configured
    return GVISOR if GVISOR in available() else RUNC


def is_gvisor(name: str) -> bool:
    """Whether ``name`` is a gVisor runtime (``runsc``, or a variant registered as ``runsc-...``)."""
    return name == GVISOR or name.startswith(GVISOR + "-")


@dataclass(frozen=True)
class Choice:
    """What health, the dashboard and metrics say about the runtime: configured, chosen, on offer."""

    configured: str
    chosen: str  # empty when it cannot be resolved now
    available: tuple[str, ...]
    problem: str = ""

    @property
    def gvisor(self) -> bool:
        return is_gvisor(self.chosen)

    @property
    def forced_but_missing(self) -> bool:
        return bool(self.available) and self.configured != AUTO and self.configured not in self.available


def describe() -> Choice:
    """The runtime choice as people see it; never raises."""
    configured = settings.SANDBOX_RUNTIME
    try:
        names = available()
    except RuntimeUnknown as exc:
        return Choice(
            configured=configured, chosen="" if configured == AUTO else configured, available=(), problem=str(exc)
        )
    choice = Choice(configured=configured, chosen=chosen(), available=tuple(sorted(names)))
    if choice.forced_but_missing:
        problem = f"SANDBOX_RUNTIME={configured} but the engine has only {', '.join(choice.available)}"
        return Choice(configured, choice.chosen, choice.available, problem)
    return choice
