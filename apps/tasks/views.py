"""Server-rendered task and batch pages: the catalogue, a task (and its create/edit form), the batch list,
a batch with live progress.

Views stay thin: they read the request, call ``progress`` / ``services`` and render. Another user's
batch is a 404, exactly as if it did not exist (``Batch.objects.visible_to``); a task nobody may see
is a 404 too. A task's hidden tests (code, input, expected output) reach the page only for those
who may see them (``Task.may_see_tests``); the failure breakdown shows ``TestResult.message`` (never
a hidden test's content, see ``apps.evaluations.testing``) and never ``detail``. The prompt is shown
as escaped preformatted text: no Markdown renderer with a sanitiser is installed, and raw HTML from a
task's author must never reach another user's browser.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.roles import is_operator
from apps.evaluations.models import ACTIVE_STATUSES, Evaluation, TestResult
from apps.tasks import progress, services
from apps.tasks.forms import TaskForm
from apps.tasks.models import Batch, Task
from apps.tasks.validation import TaskInvalid

PAGE_SIZE = 25
SAMPLES_PAGE_SIZE = 50
RECENT_BATCHES = 10
BREAKDOWN_ROWS = 50


def _query_without_page(request) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


# --- Tasks -------------------------------------------------------------------------------------


@login_required
@require_GET
def task_list(request):
    """The catalogue: the latest version of every task the user may see, searchable, by source."""
    q = request.GET.get("q", "").strip()[:200]
    source = request.GET.get("source", "").strip()[:64]
    visible = Task.objects.visible_to(request.user).latest()
    sources = list(visible.exclude(source="").order_by("source").values_list("source", flat=True).distinct())
    tasks = visible.select_related("owner").defer("tests").order_by("slug")
    if source:
        tasks = tasks.filter(source=source)
    page = Paginator(tasks.search(q), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "tasks/list.html",
        {"page": page, "q": q, "source": source, "sources": sources, "query": _query_without_page(request)},
    )


def _visible_task(request, slug: str) -> Task:
    """The latest version, or ``?version=N``; a 404 for a task (or version) the user may not see."""
    tasks = Task.objects.visible_to(request.user).filter(slug=slug).select_related("owner")
    version = request.GET.get("version", "")
    if version:
        if not version.isascii() or not version.isdigit() or len(version) > 9:
            return get_object_or_404(tasks.none())
        return get_object_or_404(tasks, version=int(version))
    return get_object_or_404(tasks, is_latest=True)


def _recent_batches_using(user, slug: str):
    """The user's latest batches with a sample scored against this task (any version)."""
    sample_batches = Evaluation.objects.filter(owner=user, task=slug, batch_id__isnull=False).values("batch_id")
    return Batch.objects.filter(owner=user).filter(Q(task__slug=slug) | Q(pk__in=sample_batches))[:RECENT_BATCHES]


@login_required
@require_GET
def task_detail(request, slug):
    task = _visible_task(request, slug)
    versions = Task.objects.visible_to(request.user).filter(slug=slug).order_by("-version")
    return render(
        request,
        "tasks/detail.html",
        {
            "task": task,
            "may_see_tests": task.may_see_tests(request.user),
            "versions": versions.only("slug", "version", "is_latest", "created_at"),
            "batches": _rows_with_progress(list(_recent_batches_using(request.user, slug))),
        },
    )


def _task_form(request, data=None, *, initial=None, editing=False) -> TaskForm:
    return TaskForm(
        data,
        initial=initial,
        languages=sorted(services.languages()),
        may_publish=is_operator(request.user),
        editing=editing,
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def task_new(request):
    """A new task (version 1), through ``services.create_task``: the same checks as the API."""
    form = _task_form(request, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            task = services.create_task(request.user, form.body(), request=request)
        except TaskInvalid as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Task {task.slug} created.")
            return redirect("tasks:detail", slug=task.slug)
    status = 400 if form.is_bound else 200
    return render(request, "tasks/form.html", {"form": form, "task": None}, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def task_edit(request, slug):
    """Edit the latest version; one some sample used is kept and the edit becomes the next version."""
    task = get_object_or_404(Task.objects.visible_to(request.user).select_related("owner"), slug=slug, is_latest=True)
    if not task.may_see_tests(request.user):
        raise PermissionDenied("Only the task's owner or an operator may edit it.")
    if request.method == "POST":
        form = _task_form(request, request.POST, initial={"slug": task.slug}, editing=True)
        if form.is_valid():
            try:
                edited = services.edit_task(task, request.user, form.body(), request=request)
            except TaskInvalid as exc:
                form.add_service_errors(exc)
            else:
                new = " (a new version: samples used the previous one)" if edited.version != task.version else ""
                messages.success(request, f"Task {edited.slug} saved as version {edited.version}{new}.")
                return redirect("tasks:detail", slug=edited.slug)
        return render(request, "tasks/form.html", {"form": form, "task": task}, status=400)
    initial = {**services.body_of(task).__dict__, "tests": json.dumps(task.tests, indent=2)}
    form = _task_form(request, initial=initial, editing=True)
    return render(request, "tasks/form.html", {"form": form, "task": task})


# --- Batches -----------------------------------------------------------------------------------


def _rows_with_progress(batches: list[Batch]) -> list[dict]:
    """Each batch with how many samples ended and passed, in one query for all of them."""
    rows = (
        Evaluation.objects.filter(batch_id__in=[b.pk for b in batches])
        .values("batch_id")
        .annotate(ended=Count("pk", filter=~Q(status__in=ACTIVE_STATUSES)), passed=Count("pk", filter=Q(passed=True)))
    )
    found = {row["batch_id"]: row for row in rows}
    return [
        {
            "batch": b,
            "ended": found.get(b.pk, {}).get("ended", 0),
            "passed": found.get(b.pk, {}).get("passed", 0),
        }
        for b in batches
    ]


@login_required
@require_GET
def batch_list(request):
    """The user's batches, newest first; operators see everyone's."""
    batches = Batch.objects.visible_to(request.user).select_related("owner", "task")
    page = Paginator(batches, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "tasks/batch_list.html",
        {"page": page, "rows": _rows_with_progress(list(page)), "show_owner": is_operator(request.user)},
    )


def _visible_batch(request, pk) -> Batch:
    return get_object_or_404(Batch.objects.visible_to(request.user).select_related("owner", "task"), pk=pk)


def failure_breakdown(batch: Batch) -> dict:
    """Where the batch's samples failed: by test (and its most common message), by test verdict, by sample reason.

    Only ``TestResult.message`` is read, never ``detail``: it is safe for whoever sees the batch."""
    failed = TestResult.objects.filter(evaluation__batch_id=batch.pk, passed=False)
    by_test = list(
        failed.values("evaluation__task", "name", "category")
        .annotate(n=Count("pk"))
        .order_by("-n", "evaluation__task", "name")[:BREAKDOWN_ROWS]
    )
    by_status = list(failed.values("status").annotate(n=Count("pk")).order_by("-n", "status"))
    messages_ = list(
        failed.exclude(message="")
        .values("evaluation__task", "name", "message")
        .annotate(n=Count("pk"))
        .order_by("-n", "evaluation__task", "name")[:BREAKDOWN_ROWS]
    )
    # Every sample that ended without passing: failed tests, and runs cut short (timeout, cancel, …).
    by_reason = list(
        Evaluation.objects.filter(batch_id=batch.pk)
        .exclude(status__in=ACTIVE_STATUSES)
        .exclude(passed=True)
        .values("reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "reason")
    )
    return {"by_test": by_test, "by_status": by_status, "messages": messages_, "by_reason": by_reason}


def _pass_at_k_rows(summary: dict) -> list[dict]:
    not_computable = summary["pass_at_k_not_computable"]
    return [
        {"k": k, "value": value, "why_not": not_computable.get(k, "no sample judged yet")}
        for k, value in summary["pass_at_k"].items()
    ]


SAMPLE_FILTERS = {"failed": "Did not pass", "passed": "Passed", "waiting": "Waiting or running"}


def _samples_shown(samples, shown: str):
    """The samples the ``?samples=`` filter asks for (an unknown value shows them all)."""
    if shown == "passed":
        return samples.filter(passed=True)
    if shown == "failed":
        return samples.exclude(status__in=ACTIVE_STATUSES).exclude(passed=True)
    if shown == "waiting":
        return samples.filter(status__in=ACTIVE_STATUSES)
    return samples


@login_required
@require_GET
def batch_detail(request, pk):
    batch = _visible_batch(request, pk)
    summary = progress.summary(batch)
    samples = (
        Evaluation.objects.filter(batch_id=batch.pk)
        .only("pk", "status", "reason", "passed", "task", "task_version", "duration_ms", "metadata", "created_at")
        .order_by("created_at", "pk")
    )
    shown = request.GET.get("samples", "")
    samples = _samples_shown(samples, shown)
    page = Paginator(samples, SAMPLES_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "tasks/batch_detail.html",
        {
            "batch": batch,
            "shown": shown if shown in SAMPLE_FILTERS else "",
            "sample_filters": SAMPLE_FILTERS,
            "query": _query_without_page(request),
            "summary": summary,
            "counts": [(status, n) for status, n in summary["counts"].items() if n],
            "pass_at_k": _pass_at_k_rows(summary),
            "tasks": sorted(summary["tasks"].items()),
            "breakdown": failure_breakdown(batch),
            "page": page,
            "is_final": summary["status"] in ("completed", "cancelled"),
            "show_owner": batch.owner_id != request.user.pk,
            "ws_path": f"/ws/batches/{batch.pk}/",
        },
    )


@login_required
@require_POST
def batch_cancel(request, pk):
    batch = _visible_batch(request, pk)
    asked = services.cancel_batch(batch, actor=request.user, request=request)
    messages.success(request, f"Batch cancelled: {asked} sample{'s' if asked != 1 else ''} asked to end.")
    return redirect("tasks:batch", pk=batch.pk)
