"""What a worker says about the engine it drives, so that nobody else needs a socket to that engine.

A worker host has its own Docker engine; the web role, the dashboard and the metrics may have none,
or another one. Each worker therefore probes its engine in a thread of its own (``EngineWatch``)
and publishes the latest ``EngineReport`` with its RQ heartbeat (``apps.evaluations.worker``).
Health, the operator dashboard and the metrics read those reports (``apps.evaluations.fleet``).

The probe asks only cheap questions (ping, one image lookup, one container listing) with the
engine client's own timeout, and never raises: an engine that does not answer is reported as such.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, fields

from django.conf import settings

from apps.sandboxing import engine, engine_runtime
from apps.sandboxing.containers import POOL_NAME_PREFIX
from apps.sandboxing.image import current_image
from apps.sandboxing.policy import LABEL_INSTANCE, LABEL_POOL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineReport:
    """One look at an engine. ``checked_at`` is a Unix time: reports travel between hosts."""

    docker: bool
    sandbox_image: bool
    sandbox_runtime: bool
    runtime: str  # the runtime sandboxes get on this engine ("" when it cannot be resolved)
    gvisor: bool
    configured: str  # SANDBOX_RUNTIME where the worker runs
    runtimes: list[str]  # the runtimes this engine offers
    sandboxes_running: int
    pool_idle: int
    checked_at: float

    @property
    def healthy(self) -> bool:
        return self.docker and self.sandbox_image and self.sandbox_runtime

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.checked_at)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> EngineReport | None:
        """The report a worker published, or None when it is missing or not one (never raises)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{f.name: data[f.name] for f in fields(cls)})
        except (KeyError, TypeError):
            return None


def probe() -> EngineReport:
    """Ask this process's engine how it is: answers, has the image and runtime, what runs on it."""
    now = time.time()
    if not engine.ping():
        return EngineReport(False, False, False, "", False, settings.SANDBOX_RUNTIME, [], 0, 0, now)
    try:
        image_ok = current_image(settings.SANDBOX_IMAGE) is not None
    except Exception:
        log.warning("engine report: could not look up the sandbox image", exc_info=True)
        image_ok = False
    choice = engine_runtime.describe()
    running, idle = _sandbox_counts()
    return EngineReport(
        docker=True,
        sandbox_image=image_ok,
        sandbox_runtime=bool(choice.chosen) and not choice.problem,
        runtime=choice.chosen or "",
        gvisor=choice.gvisor,
        configured=choice.configured,
        runtimes=list(choice.available),
        sandboxes_running=running,
        pool_idle=idle,
        checked_at=now,
    )


def _sandbox_counts() -> tuple[int, int]:
    """(sandboxes running a program, idle warm-pool sandboxes) of this instance on this engine."""
    try:
        found = engine.client().api.containers(
            filters={"label": f"{LABEL_INSTANCE}={settings.CRUCIBLE_INSTANCE}", "status": "running"}
        )
    except Exception:
        log.warning("engine report: could not list the sandboxes", exc_info=True)
        return 0, 0
    running = idle = 0
    for container in found:
        labels = container.get("Labels") or {}
        names = container.get("Names") or []
        # A pool sandbox a run claimed is renamed crucible-<run id>, a batch's sandbox kept in a worker
        # process is named crucible-kept-...: either counts as running.
        if LABEL_POOL in labels and any(name.startswith(POOL_NAME_PREFIX) for name in names):
            idle += 1
        else:
            running += 1
    return running, idle


class EngineWatch:
    """Probes the engine every ``interval_s`` in a daemon thread; ``latest`` is the newest report."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.latest: EngineReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Probe once now (so the first heartbeat carries a report), then keep probing in a thread."""
        self._probe()
        self._thread = threading.Thread(target=self._watch, name="engine-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _probe(self) -> None:
        try:
            self.latest = probe()
        except Exception:  # probe() does not raise; a bug in it must not end the watch
            log.exception("engine report: probe failed")

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._probe()
