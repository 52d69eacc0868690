"""Readiness checks for the health endpoint: can this installation take work now?

Liveness comes from heartbeats: ``workers`` is ok while at least one worker's last heartbeat is
fresh (``apps.evaluations.fleet``). The engine checks (``docker``, ``sandbox_image``,
``sandbox_runtime``) are what the live workers report of their own engines, so a web role with no
engine socket of its own (the platform image, another host) tells the truth about the engines that
run sandboxes. Only when no live worker reports an engine (none runs, or an older worker) does the
web fall back to asking its own engine. Every check returns True/False and never raises or leaks details.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import connection

from apps.evaluations import fleet
from apps.sandboxing import enginereport
from apps.sandboxing.enginereport import EngineReport
from crucible import redis_clients

log = logging.getLogger(__name__)


def check_database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        log.warning("health: database check failed", exc_info=True)
        return False


def check_redis() -> bool:
    try:
        return bool(redis_clients.rq_connection().ping())
    except Exception:
        log.warning("health: redis check failed", exc_info=True)
        return False


def live_workers() -> list[fleet.WorkerState]:
    try:
        return [worker for worker in fleet.workers() if worker.alive]
    except Exception:
        log.warning("health: worker check failed", exc_info=True)
        return []


@dataclass
class Readiness:
    checks: dict[str, bool]
    sandbox_runtime: dict

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


def assess() -> Readiness:
    """Every check, once: database, Redis, the engines (as live workers report them), workers."""
    checks = {"database": check_database(), "redis": check_redis()}
    workers = live_workers()
    # Without a live worker's report, this process asks its own engine the same questions.
    reports = [worker.engine for worker in workers if worker.engine is not None] or [enginereport.probe()]
    checks.update(
        docker=any(r.docker for r in reports),
        sandbox_image=any(r.docker and r.sandbox_image for r in reports),
        sandbox_runtime=any(r.docker and r.sandbox_runtime for r in reports),
    )
    checks["workers"] = bool(workers)
    return Readiness(checks, _reported_runtime(max(reports, key=lambda r: (r.healthy, r.checked_at))))


def report() -> tuple[int, dict]:
    """The readiness answer, as ``GET /api/v1/health/`` gives it: (HTTP status, body)."""
    readiness = assess()
    results, healthy = readiness.checks, readiness.ready
    body = {
        "status": "ok" if healthy else "degraded",
        "checks": {name: "ok" if ok else "failing" for name, ok in results.items()},
        "sandbox_runtime": readiness.sandbox_runtime,
    }
    if not healthy:
        body["failing"] = sorted(name for name, ok in results.items() if not ok)
    return (200 if healthy else 503), body


def _reported_runtime(report: EngineReport) -> dict:
    """Which runtime sandboxes get, said out loud: configured, chosen, whether it is gVisor, on offer."""
    return {
        "configured": report.configured,
        "chosen": report.runtime or None,
        "gvisor": report.gvisor,
        "available": list(report.runtimes),
    }
