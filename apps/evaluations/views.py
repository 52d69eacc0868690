"""Server-rendered evaluation pages: the list, the new-evaluation form, the detail page with the live log.

Views stay thin: they read the request, call ``services`` and render. Another user's evaluation
is a 404 everywhere (``Evaluation.objects.visible_to``), exactly as if it did not exist. The live
log itself arrives over the WebSocket (``consumers.py``); sandbox output is never rendered into
HTML by the server or inserted as HTML by the page's script.
"""

from __future__ import annotations

import difflib
import functools
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts import quotas
from apps.accounts.roles import is_operator
from apps.evaluations import artifact_files, progress, runtimes, services
from apps.evaluations.forms import EXAMPLES, EvaluationForm
from apps.evaluations.listing import parse_filters
from apps.evaluations.models import AmbiguousId, Evaluation, Priority, Status
from apps.evaluations.validation import SubmissionInvalid, SubmissionTooLarge
from apps.monitoring import incidents

PAGE_SIZE = 25


def _visible(request, pk, *, full: bool = False) -> Evaluation:
    """The evaluation ``pk`` (a full or short id) names, if this user may see it; else 404."""
    queryset = Evaluation.objects.visible_to(request.user).select_related("owner")
    if not full:
        queryset = queryset.defer("code", "stdin")
    try:
        return queryset.by_id(pk)
    except Evaluation.DoesNotExist:
        raise Http404 from None


def resolves_short_ids(view):
    """An ambiguous short id in the URL is a 400 page that says to give more of it (never a 500)."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except AmbiguousId as exc:
            return render(request, "400.html", {"message": exc.message}, status=400)

    return wrapper


@login_required
@require_GET
def evaluation_list(request):
    operator = is_operator(request.user)
    filters = parse_filters(request.GET, strict=False)
    if not operator:
        filters.owner = ""  # researchers see only their own: the filter would narrow nothing
    queryset = Evaluation.objects.visible_to(request.user).select_related("owner").defer("code", "stdin")
    page = Paginator(filters.apply(queryset), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "evaluations/list.html",
        {
            "page": page,
            "filters": filters,
            "status": filters.status,
            "q": filters.q,
            "statuses": Status.choices,
            "languages": services.language_names(),
            "query": query.urlencode(),
            "show_owner": operator,
        },
    )


@login_required
@require_GET
@resolves_short_ids
def evaluation_row(request, pk):
    """One list row (htmx polls this for active rows; a finished row stops polling)."""
    evaluation = _visible(request, pk)
    return render(request, "evaluations/_row.html", {"evaluation": evaluation, "show_owner": is_operator(request.user)})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def evaluation_new(request):
    maxima = services.maxima_for(request.user)
    high_priority = quotas.may_submit_high_priority(request.user)
    if request.method == "POST":
        form = EvaluationForm(request.POST, maxima=maxima, high_priority=high_priority)
        if form.is_valid():
            evaluation = _submit(request, form)
            if evaluation is not None:
                return redirect("evaluations:detail", pk=evaluation.pk)
        status = form.refusal_status()
    else:
        form = EvaluationForm(initial=_initial(request), maxima=maxima, high_priority=high_priority)
        status = 200
    examples = [{"key": key, "title": example["title"]} for key, example in EXAMPLES.items()]
    context = {
        "form": form,
        "examples": examples,
        "maxima": maxima,
        "code_editor_bundle": code_editor_bundle(),
        "max_code_bytes": settings.SANDBOX_MAX_CODE_BYTES,
        **runtime_builds_context(),
    }
    response = render(request, "evaluations/new.html", context, status=status)
    if form.retry_after:
        response["Retry-After"] = str(form.retry_after)
    return response


@never_cache
@login_required
@require_GET
def runtime_builds(request):
    """The form's panel of runtime image builds; it polls itself (htmx) while one is queued or running."""
    return render(request, "evaluations/_runtime_builds.html", runtime_builds_context())


def runtime_builds_context() -> dict:
    states = runtimes.build_states()
    return {"build_states": states, "builds_active": any(state.building for state in states)}


CODE_EDITOR_BUNDLE = "build/code-editor.js"


def code_editor_bundle() -> str | None:
    """The CodeMirror bundle's static path when scripts/setup.sh built it, else None (the plain
    textarea is the editor then; asking ``{% static %}`` for a missing file would be a 500 in production)."""
    if finders.find(CODE_EDITOR_BUNDLE) or staticfiles_storage.exists(CODE_EDITOR_BUNDLE):
        return CODE_EDITOR_BUNDLE
    return None


def _initial(request) -> dict:
    """Prefill from ?example=<name> or ?from=<id> (edit a copy of an earlier evaluation)."""
    example = EXAMPLES.get(request.GET.get("example", ""))
    if example:
        return {key: value for key, value in example.items() if key != "title"}
    source = request.GET.get("from")
    if source:
        try:
            source_id = uuid.UUID(source)
        except ValueError:  # a malformed id is just "nothing to copy"
            return {}
        evaluation = Evaluation.objects.visible_to(request.user).filter(pk=source_id).first()
        if evaluation is not None:
            return {
                "code": evaluation.code,
                "language": evaluation.language,
                "stdin": evaluation.stdin,
                "timeout_s": evaluation.timeout_s_requested,
                "memory_mb": evaluation.memory_mb_requested,
                "cpus": evaluation.cpus_requested,
                "priority": _allowed_priority(request.user, evaluation.priority),
                "name": evaluation.name,
                "labels": ", ".join(evaluation.labels or []),
            }
    return {}


def _allowed_priority(user, priority: str) -> str:
    """A copied priority the user may use: "high" becomes "normal" for those who may not ask for it."""
    if priority == Priority.HIGH and not quotas.may_submit_high_priority(user):
        return Priority.NORMAL
    return priority


def _submit(request, form: EvaluationForm) -> Evaluation | None:
    """Call the service; on refusal put its reasons on the form and return None."""
    try:
        evaluation, _ = services.submit(
            request.user,
            form.submission_body(),
            idempotency_key=form.cleaned_data.get("idempotency_key", ""),
            request=request,
        )
    except SubmissionInvalid as exc:
        form.add_service_errors(exc.errors)
    except SubmissionTooLarge as exc:
        form.add_error(None, f"Too large: {exc}.")
    except services.Throttled as exc:
        form.retry_after = exc.retry_after
        form.add_error(None, f"{exc.message} (try again in {exc.retry_after} s)")
    except services.PriorityNotAllowed as exc:
        form.forbidden = True
        form.add_error(exc.field, exc.message)
    except services.IdempotencyConflict:
        # This form was submitted before with other values; the next submit gets a fresh key.
        form.data = form.data.copy()
        form.data["idempotency_key"] = ""
        form.add_error(None, "This form was already submitted with other values. Check them and submit again.")
    else:
        return evaluation
    return None


@login_required
@require_GET
@resolves_short_ids
def evaluation_detail(request, pk):
    evaluation = _visible(request, pk, full=True)
    if pk != str(evaluation.pk):  # a short id: go to the page's one address
        return redirect("evaluations:detail", pk=evaluation.pk)
    return render(request, "evaluations/detail.html", _detail_context(request, evaluation))


@login_required
@require_GET
@resolves_short_ids
def evaluation_summary(request, pk):
    """The status, timings, limits, peaks, artifacts and actions; the detail page swaps it in on changes."""
    evaluation = _visible(request, pk)
    return render(request, "evaluations/_summary.html", _detail_context(request, evaluation))


@login_required
@require_GET
@resolves_short_ids
def evaluation_progress(request, pk):
    """Queue position and estimate, or elapsed time, output and peak memory; polled while the run is active."""
    evaluation = _visible(request, pk)
    return render(request, "evaluations/_progress.html", _progress_context(evaluation))


def _progress_context(evaluation: Evaluation) -> dict:
    current = progress.progress_of(evaluation)
    return {
        "evaluation": evaluation,
        "queue": current if isinstance(current, progress.QueueProgress) else None,
        "run": current if isinstance(current, progress.RunProgress) else None,
        "wait_text": progress.human_duration(getattr(current, "estimated_wait_s", None)),
    }


def _incident_context(request, evaluation: Evaluation) -> dict:
    """The run's safety incident as its owner may see it (that it exists, its status, the quarantine),
    with the report's page for operators."""
    incident = incidents.owner_view(incidents.for_run(evaluation_id=evaluation.pk))
    report = reverse("console:incident", args=[incident["id"]]) if incident and is_operator(request.user) else ""
    return {"incident": incident, "incident_report": report}


def _detail_context(request, evaluation: Evaluation) -> dict:
    return {
        **_incident_context(request, evaluation),
        **_progress_context(evaluation),
        "evaluation": evaluation,
        # A sample of a batch: its verdict per test; ``detail`` only for those who may see the task's tests.
        "test_results": list(evaluation.test_results.order_by("position")) if evaluation.tests else None,
        "may_see_tests": not evaluation.tests_hidden or is_operator(request.user),
        "artifacts": artifact_files.entries(evaluation.artifacts.all()),
        "show_owner": is_operator(request.user) and evaluation.owner_id != request.user.pk,
        "ws_path": f"/ws/evaluations/{evaluation.pk}/",
        "logs_api": reverse("api-evaluation-logs", args=[evaluation.pk]),
        "artifacts_zip": reverse("api-evaluation-artifacts-zip", args=[evaluation.pk]),
        "output_cap_kib": evaluation.output_cap_bytes // 1024,
        "default_output_cap": settings.SANDBOX_OUTPUT_CAP_BYTES,
        **_relatives(request, evaluation),
    }


def _relatives(request, evaluation: Evaluation) -> dict:
    """The run this one re-ran and the runs that re-ran it, as far as this user may see them."""
    visible = Evaluation.objects.visible_to(request.user).only("id", "status", "name", "created_at")
    rerun_of = visible.filter(pk=evaluation.rerun_of_id).first() if evaluation.rerun_of_id else None
    reruns = list(visible.filter(metadata__rerun_of=str(evaluation.pk)).order_by("created_at")[:20])
    return {"rerun_of": rerun_of, "reruns": reruns}


@login_required
@require_GET
def evaluation_compare(request):
    """Two runs side by side: name, limits, verdict, a diff of their code and of their stdout.

    ``?a=ID&b=ID`` (full or short ids); either missing or not visible is a 404, like elsewhere."""
    try:
        left = _visible(request, request.GET.get("a", ""), full=True)
        right = _visible(request, request.GET.get("b", ""), full=True)
    except AmbiguousId as exc:
        return render(request, "400.html", {"message": exc.message}, status=400)
    return render(
        request,
        "evaluations/compare.html",
        {
            "left": left,
            "right": right,
            "rows": services.comparison_rows(left, right),
            "code_diff": _diff(left.code, right.code, left.short_id, right.short_id),
            "output_diff": _diff(
                services.stdout_text(left), services.stdout_text(right), left.short_id, right.short_id
            ),
        },
    )


def _diff(before: str, after: str, before_name: str, after_name: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) pairs for the template: kind is add, remove, hunk or same."""
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), fromfile=before_name, tofile=after_name, lineterm="", n=3
    )
    kinds = {"+": "add", "-": "remove", "@": "hunk"}
    return [(kinds.get(line[:1], "same"), line) for line in lines][2:]  # the two file-name lines say nothing


@login_required
@require_POST
@resolves_short_ids
def evaluation_cancel(request, pk):
    evaluation = services.cancel(_visible(request, pk), actor=request.user, request=request)
    if evaluation.is_terminal:
        messages.success(request, f"Evaluation {evaluation.status.replace('_', ' ')}.")
    else:
        messages.success(request, "Cancel requested: the program gets SIGTERM, then SIGKILL after a short grace.")
    return redirect("evaluations:detail", pk=evaluation.pk)


@login_required
@require_POST
@resolves_short_ids
def evaluation_stop(request, pk):
    evaluation = services.stop(_visible(request, pk), actor=request.user, request=request)
    if evaluation.is_terminal:
        messages.warning(request, f"Evaluation {evaluation.status.replace('_', ' ')}.")
    else:
        messages.warning(request, "Emergency stop requested: the container is being killed now.")
    return redirect("evaluations:detail", pk=evaluation.pk)


@login_required
@require_POST
@resolves_short_ids
def evaluation_rerun(request, pk):
    """Run the same code with the same limits again, as a new evaluation of the current user."""
    original = _visible(request, pk, full=True)
    try:
        evaluation, _ = services.submit(request.user, services.resubmission_body(original), request=request)
    except SubmissionInvalid as exc:
        reasons = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in exc.errors.items())
        messages.error(request, f"Could not run it again: {reasons}")
    except SubmissionTooLarge as exc:
        messages.error(request, f"Could not run it again: {exc}.")
    except services.Throttled as exc:
        messages.error(request, f"Could not run it again: {exc.message} (try again in {exc.retry_after} s)")
    except services.PriorityNotAllowed as exc:
        messages.error(request, f"Could not run it again: {exc.message}")
    else:
        messages.success(request, "Running it again.")
        return redirect("evaluations:detail", pk=evaluation.pk)
    return redirect("evaluations:detail", pk=original.pk)
