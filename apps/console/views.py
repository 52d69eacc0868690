"""Operator pages: dashboard, alerts, kill switch, audit log. Operators only; others get 404 (the pages
do not exist for them), anonymous visitors are sent to sign in. The paths stay under /monitoring/."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.permissions import operator_required
from apps.audit import services as audit
from apps.console import dashboard as data
from apps.console import emergency, incident_report
from apps.evaluations import killswitch
from apps.monitoring import alerts as alert_service
from apps.monitoring import incidents as incident_service
from apps.monitoring.models import Alert, Incident, IncidentStatus

PAGE_SIZE = 50
MAX_PAGE = 100000
ACKNOWLEDGE_RETURNS_TO = ("/monitoring/", "/monitoring/alerts/", "/monitoring/alerts/?show=all")


@require_GET
@operator_required
def dashboard(request):
    return render(request, "console/dashboard.html", data.overview())


@require_GET
@operator_required
def live(request):
    """The parts of the dashboard that change by the second (htmx polls this)."""
    return render(request, "console/_live.html", data.live())


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
        "console/alerts.html",
        {"alerts": page, "show": show, "page_number": _page_number(request), "has_next": has_next},
    )


@require_POST
@operator_required
def alert_acknowledge_many(request):
    """Acknowledge the ticked alerts (``alert`` repeated), or every unacknowledged one (``all=1``)."""
    if request.POST.get("all") == "1":
        ids = list(Alert.objects.unacknowledged().values_list("pk", flat=True)[: alert_service.MAX_BULK_ACKNOWLEDGE])
    else:
        raw = request.POST.getlist("alert")
        if not all(value.isascii() and value.isdigit() and len(value) < 19 for value in raw):
            return HttpResponseBadRequest("alert must be alert ids")
        ids = [int(value) for value in raw]
    count = alert_service.acknowledge_many(ids, actor=request.user, request=request)
    if count:
        messages.success(request, f"{count} alert{'s' if count != 1 else ''} acknowledged.")
    else:
        messages.info(request, "No alert was acknowledged: none selected, or already acknowledged.")
    target = request.POST.get("next", "")
    return redirect(target if target in ACKNOWLEDGE_RETURNS_TO else "/monitoring/alerts/")


@require_POST
@operator_required
def alert_acknowledge(request, pk):
    alert = get_object_or_404(Alert, pk=pk)
    if alert_service.acknowledge(alert, actor=request.user, request=request):
        messages.success(request, f"Alert {alert.rule_name} acknowledged.")
    else:
        messages.info(request, "That alert was already acknowledged.")
    target = request.POST.get("next", "")
    if target not in ACKNOWLEDGE_RETURNS_TO:
        target = "/monitoring/alerts/"
    return redirect(target)


# --- kill switch --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@operator_required
def killswitch_view(request):
    if request.method == "GET":
        return render(
            request, "console/killswitch.html", {**killswitch.state(), "live_sessions": data.live_session_count()}
        )
    engaged = request.POST.get("engaged")
    if engaged not in ("true", "false"):
        return HttpResponseBadRequest("engaged must be 'true' or 'false'")
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box to use the kill switch.")
        return redirect("console:killswitch")
    if engaged == "true":
        engaged = emergency.engage(request.user, request)
        messages.warning(
            request,
            f"Kill switch engaged: {len(engaged.stopped)} evaluation(s) stopped, "
            f"{len(engaged.sessions_ended)} session(s) ended, queues paused.",
        )
    else:
        killswitch.release(request.user, request)
        messages.success(request, "Kill switch released: the queues run again.")
    return redirect("console:dashboard")


# --- audit log ----------------------------------------------------------------------------


def _page_number(request) -> int | None:
    raw = request.GET.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_PAGE:
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
    page, has_next = _page(request, audit.search(**filters))
    if page is None:
        return HttpResponseBadRequest("page must be a positive integer")
    return render(
        request,
        "console/audit.html",
        {
            "events": page,
            "filters": filters,
            "query": urlencode({key: value for key, value in filters.items() if value}),
            "page_number": _page_number(request),
            "has_next": has_next,
            "actions": audit.known_actions(),
        },
    )


# --- safety incidents ----------------------------------------------------------------------


@require_GET
@operator_required
def incident_list(request):
    incidents = Incident.objects.order_by("-opened_at")[:200]
    return render(request, "console/incidents.html", {"incidents": incidents})


@require_GET
@operator_required
def incident_detail(request, pk):
    """The incident's report as a page (the same record as the JSON and Markdown downloads)."""
    incident = get_object_or_404(Incident, pk=pk)
    report = incident_report.build(incident)
    samples = report["samples"]
    run = report["run"] or {}
    facts = [
        (k, run[k])
        for k in (
            "kind",
            "id",
            "owner",
            "status",
            "reason",
            "language",
            "code_sha256",
            "image_digest",
            "runtime",
            "image",
            "started_at",
            "finished_at",
        )
        if run.get(k)
    ]
    facts += [(f"limit {k}", v) for k, v in (run.get("limits") or {}).items()]
    context = {
        "incident": incident,
        "report": report,
        "run_facts": facts,
        "samples": samples,
        "memory_max": max([s["memory_bytes"] for s in samples] + [1]),
        "cpu_max": max([s["cpu_percent"] for s in samples] + [100]),
        "pids_max": max([s["pids"] for s in samples] + [1]),
        "statuses": IncidentStatus.choices,
        "evidence_text": json.dumps(report["evidence"], indent=2),
    }
    return render(request, "console/incident.html", context)


@require_POST
@operator_required
def incident_transition(request, pk):
    incident = get_object_or_404(Incident, pk=pk)
    try:
        incident_service.transition(
            incident,
            request.POST.get("status", ""),
            actor=request.user,
            comment=request.POST.get("comment", ""),
            request=request,
        )
    except incident_service.TransitionRefused as exc:
        return HttpResponseBadRequest(str(exc))
    messages.success(request, f"Incident #{incident.pk} is now {incident.status}.")
    return redirect("console:incident", pk=incident.pk)


@require_POST
@operator_required
def incident_release(request, pk):
    incident = get_object_or_404(Incident, pk=pk)
    incident_service.release(incident, actor=request.user, request=request)
    messages.success(request, f"The quarantine of incident #{incident.pk} is released.")
    return redirect("console:incident", pk=incident.pk)
