"""Operator pages: dashboard, alerts, kill switch, audit log. Operators only; others get 404 (the pages
do not exist for them), anonymous visitors are sent to sign in."""

from __future__ import annotations

import functools
import logging
from datetime import UTC, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.monitoring import alerts as alert_service
from apps.monitoring.models import Alert, AuditEvent, ResourceSample

log = logging.getLogger(__name__)

QUEUES = ("high", "default", "low")
PAGE_SIZE = 50
RATE_HOURS = 24
STATUS_GROUPS = {
    "succeeded": ("succeeded",),
    "failed": ("failed", "timed_out", "oom_killed"),
    "stopped": ("cancelled", "stopped", "safety_stopped"),
    "error": ("error",),
}


def operator_required(view):
    @login_required
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        from apps.accounts.roles import is_operator

        if not is_operator(request.user):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapped


# --- data for the dashboard --------------------------------------------------------------


def queue_depths() -> list[dict]:
    import django_rq

    rows = []
    for name in QUEUES:
        try:
            queue = django_rq.get_queue(name)
            rows.append({"name": name, "waiting": queue.count, "running": queue.started_job_registry.count})
        except Exception:
            log.warning("dashboard: cannot read queue %s", name, exc_info=True)
            rows.append({"name": name, "waiting": None, "running": None})
    return rows


def workers() -> list[dict]:
    import django_rq
    from rq import Worker

    try:
        found = Worker.all(connection=django_rq.get_connection("default"))
    except Exception:
        log.warning("dashboard: cannot list workers", exc_info=True)
        return []
    now = timezone.now()
    rows = []
    for worker in sorted(found, key=lambda w: w.name):
        heartbeat = worker.last_heartbeat
        if heartbeat is not None and timezone.is_naive(heartbeat):
            heartbeat = timezone.make_aware(heartbeat, UTC)
        rows.append(
            {
                "name": worker.name,
                "state": worker.get_state(),
                "queues": ", ".join(worker.queue_names()),
                "heartbeat": heartbeat,
                "heartbeat_age_s": (now - heartbeat).total_seconds() if heartbeat else None,
                "job": worker.get_current_job_id() or "",
            }
        )
    return rows


def running_evaluations(limit: int = 50) -> list:
    from apps.evaluations.models import Evaluation, Status

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


def rate_chart(hours: int = RATE_HOURS) -> dict:
    """Finished evaluations per hour for the last ``hours``, by outcome group, as SVG bar geometry."""
    from apps.evaluations.models import Evaluation

    now = timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
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
    width, height, pad = 720, 160, 20
    slot = width / hours
    peak = max([sum(b.values()) for b in counts.values()] + [1])
    bars, totals = [], dict.fromkeys(STATUS_GROUPS, 0)
    for i in range(hours):
        hour = start + timedelta(hours=i)
        bucket = counts.get(hour, dict.fromkeys(STATUS_GROUPS, 0))
        y = height
        for group, n in bucket.items():
            totals[group] += n
            if not n:
                continue
            h = n / peak * (height - pad)
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
        "width": width,
        "height": height,
        "peak": peak,
        "totals": totals,
        "finished": finished,
        "success_rate": (totals["succeeded"] / finished) if finished else None,
        "labels": [
            {"x": round(i * slot + slot / 2, 1), "text": f"{start + timedelta(hours=i):%H}"} for i in range(0, hours, 3)
        ],
    }


def _dashboard_context() -> dict:
    from apps.evaluations import killswitch
    from apps.evaluations.models import Evaluation, Status

    since = timezone.now() - timedelta(hours=RATE_HOURS)
    finished = Evaluation.objects.filter(finished_at__gte=since).select_related("owner")
    try:
        engaged = killswitch.is_engaged()
    except Exception:
        engaged = None
    return {
        "queues": queue_depths(),
        "killswitch_engaged": engaged,
        "running": running_evaluations(),
        "queued_count": Evaluation.objects.filter(status=Status.QUEUED).count(),
        "workers": workers(),
        "chart": rate_chart(),
        "recent_alerts": list(Alert.objects.select_related("acknowledged_by")[:10]),
        "slowest": list(finished.filter(duration_ms__isnull=False).order_by("-duration_ms")[:10]),
        "failures": list(
            finished.filter(status__in=[Status.FAILED, Status.ERROR, Status.TIMED_OUT, Status.OOM_KILLED]).order_by(
                "-finished_at"
            )[:10]
        ),
    }


@require_GET
@operator_required
def dashboard(request):
    return render(request, "monitoring/dashboard.html", _dashboard_context())


@require_GET
@operator_required
def live(request):
    """The parts of the dashboard that change by the second (htmx polls this)."""
    from apps.evaluations import killswitch
    from apps.evaluations.models import Evaluation, Status

    try:
        engaged = killswitch.is_engaged()
    except Exception:
        engaged = None
    return render(
        request,
        "monitoring/_live.html",
        {
            "queues": queue_depths(),
            "running": running_evaluations(),
            "killswitch_engaged": engaged,
            "queued_count": Evaluation.objects.filter(status=Status.QUEUED).count(),
            "workers": workers(),
        },
    )


# --- alerts -------------------------------------------------------------------------------


@require_GET
@operator_required
def alert_list(request):
    show = request.GET.get("show", "open")
    if show not in ("open", "all"):
        return HttpResponseBadRequest("show must be 'open' or 'all'")
    alerts = Alert.objects.select_related("acknowledged_by").order_by("-created_at")
    if show == "open":
        alerts = alerts.unacknowledged()
    page, has_next = _page(request, alerts)
    if page is None:
        return HttpResponseBadRequest("page must be a positive integer")
    return render(
        request,
        "monitoring/alerts.html",
        {"alerts": page, "show": show, "page_number": _page_number(request), "has_next": has_next},
    )


@require_POST
@operator_required
def alert_acknowledge(request, pk):
    alert = get_object_or_404(Alert, pk=pk)
    if alert_service.acknowledge(alert, actor=request.user, request=request):
        messages.success(request, f"Alert {alert.rule_name} acknowledged.")
    else:
        messages.info(request, "That alert was already acknowledged.")
    target = request.POST.get("next", "")
    if target not in ("/monitoring/", "/monitoring/alerts/", "/monitoring/alerts/?show=all"):
        target = "/monitoring/alerts/"
    return redirect(target)


# --- kill switch --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@operator_required
def killswitch_view(request):
    from apps.evaluations import killswitch

    if request.method == "GET":
        return render(request, "monitoring/killswitch.html", killswitch.state())
    engaged = request.POST.get("engaged")
    if engaged not in ("true", "false"):
        return HttpResponseBadRequest("engaged must be 'true' or 'false'")
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box to use the kill switch.")
        return redirect("monitoring:killswitch")
    if engaged == "true":
        stopped = killswitch.engage(request.user, request)
        messages.warning(request, f"Kill switch engaged: {len(stopped)} evaluation(s) stopped, queues paused.")
    else:
        killswitch.release(request.user, request)
        messages.success(request, "Kill switch released: the queues run again.")
    return redirect("monitoring:dashboard")


# --- audit log ----------------------------------------------------------------------------


def _page_number(request) -> int | None:
    raw = request.GET.get("page", "1")
    if not raw.isdigit() or not 0 < int(raw) <= 100000:
        return None
    return int(raw)


def _page(request, queryset):
    """One page without a COUNT over the whole table: fetch one row more to know if there is a next page."""
    number = _page_number(request)
    if number is None:
        return None, False
    offset = (number - 1) * PAGE_SIZE
    rows = list(queryset[offset : offset + PAGE_SIZE + 1])
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


@require_GET
@operator_required
def audit_log(request):
    filters = {key: request.GET.get(key, "").strip()[:200] for key in ("action", "actor", "target")}
    events = AuditEvent.objects.all()
    if filters["action"]:
        events = events.filter(action__istartswith=filters["action"])
    if filters["actor"]:
        actor = filters["actor"]
        events = events.filter(Q(actor_name__iexact=actor) | (Q(actor_name="") if actor == "system" else Q(pk__in=[])))
    if filters["target"]:
        events = events.filter(target__icontains=filters["target"])
    page, has_next = _page(request, events.order_by("-created_at", "-pk"))
    if page is None:
        return HttpResponseBadRequest("page must be a positive integer")
    query = urlencode({key: value for key, value in filters.items() if value})
    return render(
        request,
        "monitoring/audit.html",
        {
            "events": page,
            "filters": filters,
            "query": query,
            "page_number": _page_number(request),
            "has_next": has_next,
            "actions": _known_actions(),
        },
    )


def _known_actions() -> list[str]:
    from django.core.cache import cache

    actions = cache.get("monitoring:audit-actions")
    if actions is None:
        actions = list(AuditEvent.objects.order_by().values_list("action", flat=True).distinct()[:200])
        cache.set("monitoring:audit-actions", sorted(actions), 60)
    return sorted(actions)
