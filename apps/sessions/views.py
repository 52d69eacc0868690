"""Server-rendered session pages: the list and one session's page with its live transcript.

Views stay thin: they read the request, call ``services`` and render. Another user's session is a
404 everywhere (``Session.objects.visible_to``), exactly as if it did not exist; operators see all.
The transcript itself arrives over the WebSocket (``consumers.py``) and is drawn by
``static/js/session-detail.js`` as text only: sandbox output is hostile and is never rendered as HTML.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import is_operator
from apps.sessions import services
from apps.sessions.limits import exec_limits
from apps.sessions.models import EndReason, Session, Status

PAGE_SIZE = 25


def _visible(request, pk) -> Session:
    return get_object_or_404(Session.objects.visible_to(request.user).select_related("owner"), pk=pk)


@login_required
@require_GET
def session_list(request):
    """The user's own sessions, newest first (operators: everyone's), filtered by ``?status=``."""
    status = request.GET.get("status", "")
    sessions = Session.objects.visible_to(request.user).select_related("owner").order_by("-created_at")
    if status in Status.values:
        sessions = sessions.filter(status=status)
    page = Paginator(sessions, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "sessions/list.html",
        {
            "page": page,
            "status": status if status in Status.values else "",
            "statuses": Status.choices,
            "show_owner": is_operator(request.user),
        },
    )


@login_required
@require_GET
def session_detail(request, pk):
    session = _visible(request, pk)
    return render(request, "sessions/detail.html", _detail_context(request, session))


@login_required
@require_GET
def session_summary(request, pk):
    """The status, limits, times and actions; the page swaps it in when the session's status changes."""
    session = _visible(request, pk)
    return render(request, "sessions/_summary.html", _detail_context(request, session))


def _detail_context(request, session: Session) -> dict:
    end = session.ended_at or timezone.now()
    return {
        "session": session,
        "limits": exec_limits(),
        "runtime_s": int((end - (session.ready_at or session.created_at)).total_seconds()),
        "is_operator": is_operator(request.user),
        "show_owner": is_operator(request.user) and session.owner_id != request.user.pk,
        "ws_path": f"/ws/sandboxes/{session.pk}/",
        "transcript_api": reverse("api-session-execs", args=[session.pk]),
    }


@login_required
@require_POST
def session_end(request, pk):
    """End the session as its owner would with DELETE (reason ``deleted``)."""
    session = _visible(request, pk)
    if services.end(session, EndReason.DELETED, actor=request.user, request=request):
        messages.success(request, "Session ended: its sandbox is being removed.")
    else:
        messages.info(request, "That session had already ended.")
    return redirect("sessions:detail", pk=session.pk)


@login_required
@require_POST
def session_stop(request, pk):
    """Emergency stop (operators only; for everyone else the action does not exist)."""
    if not is_operator(request.user):
        raise Http404
    session = _visible(request, pk)
    if services.stop(session, actor=request.user, request=request):
        messages.warning(request, "Emergency stop: the sandbox is killed now; an alert was raised.")
    else:
        messages.info(request, "That session had already ended.")
    return redirect("sessions:detail", pk=session.pk)
