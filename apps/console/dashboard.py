"""What the operator dashboard shows: queues, workers, running evaluations with their latest sample,
live sessions, finished runs per hour, slow and failed runs. Reads only; every figure is computed on request."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone

from apps.evaluations import fleet, killswitch, runtimes
from apps.evaluations.models import Evaluation, Status
from apps.monitoring.models import Alert, ResourceSample
from apps.sandboxing import engine_runtime, pool
from apps.sandboxing.enginereport import EngineReport
from apps.sessions.models import Session
from crucible import redis_clients

log = logging.getLogger(__name__)

RATE_HOURS = 24
STATUS_GROUPS = {
    "succeeded": ("succeeded",),
    "failed": ("failed", "timed_out", "oom_killed"),
    "stopped": ("cancelled", "stopped", "safety_stopped"),
    "error": ("error",),
}
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 160, 20


def queue_depths() -> list[dict]:
    rows = []
    for name in settings.RQ_QUEUES:
        try:
            queue = redis_clients.rq_queue(name)
            rows.append({"name": name, "waiting": queue.count, "running": queue.started_job_registry.count})
        except Exception:
            log.warning("dashboard: cannot read queue %s", name, exc_info=True)
            rows.append({"name": name, "waiting": None, "running": None})
    return rows


def fleet_states() -> list[fleet.WorkerState]:
    try:
        return fleet.workers()
    except Exception:
        log.warning("dashboard: cannot list workers", exc_info=True)
        return []


def workers(states: list[fleet.WorkerState]) -> list[dict]:
    return [
        {
            "name": w.name,
            "host": w.host,
            "state": w.state,
            "alive": w.alive,
            "queues": w.queues,
            "heartbeat": w.last_heartbeat,
            "heartbeat_age_s": w.heartbeat_age_s,
            "job": w.job,
        }
        for w in states
    ]


def hosts(states: list[fleet.WorkerState]) -> list[dict]:
    """Each host that runs workers: its workers, what its engine last reported, its last heartbeat."""
    now = timezone.now()
    rows = []
    for host in fleet.hosts(states):
        report = host.engine
        rows.append(
            {
                "name": host.name,
                "workers": len(host.workers),
                "alive": len(host.alive_workers),
                "engine": report,
                "engine_problems": _engine_problems(report),
                "last_heartbeat": host.last_heartbeat,
                "heartbeat_age_s": (now - host.last_heartbeat).total_seconds() if host.last_heartbeat else None,
            }
        )
    return rows


def _engine_problems(report: EngineReport | None) -> list[str]:
    if report is None:
        return ["no report"]
    if not report.docker:
        return ["engine unreachable"]
    problems = []
    if not report.sandbox_image:
        problems.append("sandbox image missing")
    if not report.sandbox_runtime:
        problems.append("runtime unavailable")
    return problems


def runtime_choice(states: list[fleet.WorkerState]) -> engine_runtime.Choice:
    """The runtime sandboxes get, as the live workers' engines report it (else as the web's engine says)."""
    reports = [w.engine for w in states if w.alive and w.engine is not None and w.engine.docker]
    if not reports:
        return engine_runtime.describe()
    report = max(reports, key=lambda r: (r.sandbox_runtime, r.checked_at))
    problem = "" if report.sandbox_runtime else f"SANDBOX_RUNTIME={report.configured} cannot be resolved on the engine"
    return engine_runtime.Choice(report.configured, report.runtime, tuple(report.runtimes), problem)


def running_evaluations(limit: int = 50) -> list[Evaluation]:
    """The oldest running evaluations, each with ``sample`` (its latest) and ``memory_fraction``."""
    running = list(
        Evaluation.objects.filter(status=Status.RUNNING)
        .select_related("owner")
        .only("id", "owner__username", "language", "started_at", "memory_mb", "pids_limit", "cpus", "worker")
        .order_by("started_at")[:limit]
    )
    latest = {
        s.evaluation_id: s
        for s in ResourceSample.objects.filter(evaluation_id__in=[e.pk for e in running])
        .order_by("evaluation_id", "-at")
        .distinct("evaluation_id")
    }
    for evaluation in running:
        evaluation.sample = latest.get(evaluation.pk)
        if evaluation.sample is not None:
            evaluation.memory_fraction = evaluation.sample.memory_bytes / (evaluation.memory_mb * 1024 * 1024)
    return running


def live_sessions(limit: int = 50) -> list[Session]:
    """The oldest live sessions (starting or ready), each with ``age_s`` (since it was created)."""
    now = timezone.now()
    sessions = list(
        Session.objects.live()
        .select_related("owner")
        .only("id", "owner__username", "status", "language", "host", "step_count", "created_at", "last_activity_at")
        .order_by("created_at")[:limit]
    )
    for session in sessions:
        session.age_s = (now - session.created_at).total_seconds()
    return sessions


def live_session_count() -> int:
    return Session.objects.live().count()


def _hourly_counts(start) -> dict:
    """{hour: {group: finished count}} for evaluations finished since ``start``."""
    counts: dict = {}
    rows = (
        Evaluation.objects.filter(finished_at__gte=start)
        .annotate(hour=TruncHour("finished_at"))
        .values_list("hour", "status")
        .order_by()
        .annotate(n=Count("pk"))
    )
    group_of = {status: group for group, statuses in STATUS_GROUPS.items() for status in statuses}
    for hour, status, n in rows:
        bucket = counts.setdefault(hour, dict.fromkeys(STATUS_GROUPS, 0))
        bucket[group_of.get(status, "error")] += n
    return counts


def rate_chart(hours: int = RATE_HOURS) -> dict:
    """Finished evaluations per hour for the last ``hours``, by outcome group, as SVG bar geometry."""
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    counts = _hourly_counts(start)
    slot = CHART_WIDTH / hours
    peak = max([sum(b.values()) for b in counts.values()] + [1])
    bars, totals = [], dict.fromkeys(STATUS_GROUPS, 0)
    for i in range(hours):
        hour = start + timedelta(hours=i)
        y = CHART_HEIGHT
        for group, n in counts.get(hour, dict.fromkeys(STATUS_GROUPS, 0)).items():
            totals[group] += n
            if not n:
                continue
            h = n / peak * (CHART_HEIGHT - CHART_PAD)
            y -= h
            bars.append(
                {
                    "x": round(i * slot + 2, 1),
                    "y": round(y, 1),
                    "w": round(slot - 4, 1),
                    "h": round(h, 1),
                    "group": group,
                    "title": f"{hour:%H:00} UTC: {n} {group}",
                }
            )
    finished = sum(totals.values())
    return {
        "bars": bars,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "peak": peak,
        "totals": totals,
        "finished": finished,
        "success_rate": (totals["succeeded"] / finished) if finished else None,
        "labels": [
            {"x": round(i * slot + slot / 2, 1), "text": f"{start + timedelta(hours=i):%H}"} for i in range(0, hours, 3)
        ],
    }


def killswitch_engaged() -> bool | None:
    """The kill switch's state, or None when Redis cannot say (the page shows "unknown")."""
    try:
        return killswitch.is_engaged()
    except Exception:
        return None


def live() -> dict:
    """The parts of the dashboard that change by the second."""
    pools = warm_pools()
    states = fleet_states()
    rows = workers(states)
    for row in rows:
        row["warm_idle"] = None if pools is None else pools.get(row["name"], 0)
    return {
        "queues": queue_depths(),
        "running": running_evaluations(),
        "sessions": live_sessions(),
        "live_session_count": live_session_count(),
        "killswitch_engaged": killswitch_engaged(),
        "queued_count": Evaluation.objects.filter(status=Status.QUEUED).count(),
        "workers": rows,
        "alive_workers": sum(1 for w in states if w.alive),
        "hosts": hosts(states),
        "sandbox_runtime": runtime_choice(states),
        "warm_pool_size": settings.SANDBOX_POOL_SIZE,
        "runtime_builds": runtime_builds(),
    }


def runtime_builds() -> list[runtimes.RuntimeState] | None:
    """The runtime images that are missing or have a build to show (None when it cannot be said)."""
    try:
        return runtimes.build_states()
    except Exception:
        log.warning("dashboard: could not read the runtime builds", exc_info=True)
        return None


def warm_pools() -> dict[str, int] | None:
    """Idle warm sandboxes per worker (None when the engine cannot say)."""
    try:
        return pool.idle_by_owner()
    except Exception:
        log.warning("dashboard: could not count the warm pools", exc_info=True)
        return None


def overview() -> dict:
    """Everything on the dashboard: the live parts, the chart, recent alerts, slowest and failed runs."""
    since = timezone.now() - timedelta(hours=RATE_HOURS)
    finished = Evaluation.objects.filter(finished_at__gte=since).select_related("owner")
    failed = (Status.FAILED, Status.ERROR, Status.TIMED_OUT, Status.OOM_KILLED)
    return {
        **live(),
        "chart": rate_chart(),
        "recent_alerts": list(Alert.objects.select_related("acknowledged_by")[:10]),
        "slowest": list(finished.filter(duration_ms__isnull=False).order_by("-duration_ms")[:10]),
        "failures": list(finished.filter(status__in=failed).order_by("-finished_at")[:10]),
    }
