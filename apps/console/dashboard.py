"""What the operator dashboard shows: queues, workers, running evaluations with their latest sample,
live sessions, finished runs per hour, slow and failed runs. Reads only; every figure is computed on request."""

from __future__ import annotations

import logging
from datetime import UTC, timedelta

import django_rq
from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone
from rq import Worker

from apps.evaluations import killswitch
from apps.evaluations.models import Evaluation, Status
from apps.monitoring.models import Alert, ResourceSample
from apps.sandboxing import engine_runtime, pool
from apps.sessions.models import Session

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
            queue = django_rq.get_queue(name)
            rows.append({"name": name, "waiting": queue.count, "running": queue.started_job_registry.count})
        except Exception:
            log.warning("dashboard: cannot read queue %s", name, exc_info=True)
            rows.append({"name": name, "waiting": None, "running": None})
    return rows


def workers() -> list[dict]:
    try:
        found = Worker.all(connection=django_rq.get_connection("default"))
    except Exception:
        log.warning("dashboard: cannot list workers", exc_info=True)
        return []
    now = timezone.now()
    return [_worker_row(worker, now) for worker in sorted(found, key=lambda w: w.name)]


def _worker_row(worker: Worker, now) -> dict:
    heartbeat = worker.last_heartbeat
    if heartbeat is not None and timezone.is_naive(heartbeat):
        heartbeat = timezone.make_aware(heartbeat, UTC)
    return {
        "name": worker.name,
        "state": worker.get_state(),
        "queues": ", ".join(worker.queue_names()),
        "heartbeat": heartbeat,
        "heartbeat_age_s": (now - heartbeat).total_seconds() if heartbeat else None,
        "job": worker.get_current_job_id() or "",
    }


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
    rows = workers()
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
        "sandbox_runtime": engine_runtime.describe(),
        "warm_pool_size": settings.SANDBOX_POOL_SIZE,
    }


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
