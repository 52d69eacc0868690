"""Business rules for evaluations. The API, the web pages, the admin and the CLI all call these."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from rq import Queue
from rq.job import Job

from apps.accounts import quotas
from apps.audit import services as audit
from apps.evaluations import builds, control_hints, publisher
from apps.evaluations.callbacks import targets
from apps.evaluations.models import ACTIVE_STATUSES, STATUS_FOR_CONTROL, Control, Evaluation, Priority, Runtime, Status
from apps.evaluations.validation import Maxima, Submission, SubmissionInvalid, parse_submission
from apps.monitoring import alerts, incidents
from crucible import redis_clients

log = logging.getLogger(__name__)

QUEUE_FULL_RETRY_AFTER_S = 10


class Throttled(Exception):
    """429: over a quota or the queue is full. ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class IdempotencyConflict(Exception):
    """409: the Idempotency-Key was used before with a different body."""


class PriorityNotAllowed(Exception):
    """403: the submission asks for high priority, which this user's role and quota do not allow."""

    field = "priority"
    message = (
        "High priority is for operators and for users whose quota allows it; "
        "submit with priority normal or low, or ask an operator."
    )

    def __init__(self):
        super().__init__(self.message)


def maxima_for(user, limits: quotas.UserLimits | None = None) -> Maxima:
    """The operator's maxima, lowered further by the user's own quota where one is set (``limits``:
    the user's ``quotas.limits_for``, when the caller has read them already)."""
    limits = limits or quotas.limits_for(user)
    return Maxima(
        timeout_s=min(settings.SANDBOX_MAX_TIMEOUT_S, limits.max_timeout_s or settings.SANDBOX_MAX_TIMEOUT_S),
        memory_mb=min(settings.SANDBOX_MAX_MEMORY_MB, limits.max_memory_mb or settings.SANDBOX_MAX_MEMORY_MB),
        cpus=min(settings.SANDBOX_MAX_CPUS, limits.max_cpus or settings.SANDBOX_MAX_CPUS),
    )


def _fingerprint(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def submit(owner, body, *, idempotency_key: str = "", request=None) -> tuple[Evaluation, bool]:
    """Validate and accept a submission; returns (evaluation, created).

    Raises SubmissionInvalid (400), SubmissionTooLarge (413), PriorityNotAllowed (403),
    IdempotencyConflict (409) or Throttled (429). The row is written in one transaction and its job
    enqueued on commit.
    """
    idempotency_key = (idempotency_key or "").strip()
    if len(idempotency_key) > 200:
        raise SubmissionInvalid({"Idempotency-Key": ["Must be at most 200 characters."]})
    if "\x00" in idempotency_key:
        raise SubmissionInvalid({"Idempotency-Key": ["Must not contain NUL characters."]})
    fingerprint = _fingerprint(body)
    if idempotency_key:
        existing = Evaluation.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, fingerprint)

    limits = quotas.limits_for(owner)
    submission = parse_submission(body, maxima_for(owner, limits))
    _check_callback_url(submission.callback_url)
    if submission.priority == Priority.HIGH and not quotas.may_submit_high_priority(owner, limits):
        raise PriorityNotAllowed
    active, queued = _active_and_queued(owner)
    try:
        quotas.enforce_submission_quota(owner, active_count=active, limits=limits)
    except quotas.QuotaExceeded as exc:
        raise Throttled(exc.message, exc.retry_after) from exc
    if queued >= settings.QUEUE_CAPACITY:
        raise Throttled(
            f"The queue is full ({settings.QUEUE_CAPACITY} evaluations waiting); try again shortly.",
            QUEUE_FULL_RETRY_AFTER_S,
        )
    try:
        with transaction.atomic():
            awaiting = _awaits_build(submission)
            evaluation = _create(owner, submission, idempotency_key, fingerprint, awaiting_runtime=awaiting)
            if not awaiting:
                timeout = job_timeout(evaluation)
                transaction.on_commit(lambda: enqueue(evaluation.pk, evaluation.queue_name, timeout))
    except IntegrityError:
        # Two requests with the same new Idempotency-Key raced; the other one won.
        existing = Evaluation.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    audit.record(
        "evaluation.submit",
        actor=owner,
        target=evaluation.pk,
        request=request,
        code_sha256=evaluation.code_sha256,
        language=evaluation.language,
    )
    return evaluation, True


def _active_and_queued(owner) -> tuple[int, int]:
    """In one query: ``owner``'s single runs queued or running (batch samples have their own quota,
    admitted as a whole: apps.tasks), and every run waiting in the queue (its capacity)."""
    mine = Q(owner=owner, batch_id__isnull=True, status__in=ACTIVE_STATUSES)
    waiting = Q(status=Status.QUEUED, held=False)
    counts = Evaluation.objects.filter(mine | waiting).aggregate(
        active=Count("pk", filter=mine), queued=Count("pk", filter=waiting)
    )
    return counts["active"], counts["queued"]


def _awaits_build(submission: Submission) -> bool:
    """Whether the run waits for its runtime's image to be built (inside the submission's transaction,
    which holds the build's row until it commits: see ``builds``). A build that failed meanwhile is a 400."""
    if not submission.await_build:
        return False
    runtime = Runtime.objects.get(name=submission.language)
    decision = builds.wait_for_build(runtime, by="submission")
    if decision == builds.Wait.FAILED:
        raise SubmissionInvalid({"language": [builds.failure_message(runtime, builds.build_of(runtime))]})
    return decision == builds.Wait.WAIT


def _check_callback_url(url: str) -> None:
    """A 400 naming ``callback_url`` if callbacks may not go there (resolved now: see callbacks.targets)."""
    if not url:
        return
    try:
        targets.validate(url)
    except targets.CallbackUrlRefused as exc:
        raise SubmissionInvalid({"callback_url": [exc.message]}) from None


def _replay(existing: Evaluation, fingerprint: str) -> tuple[Evaluation, bool]:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict("This Idempotency-Key was already used with a different request body.")
    return existing, False


def _create(
    owner, submission: Submission, idempotency_key: str, fingerprint: str, *, awaiting_runtime: bool = False
) -> Evaluation:
    return Evaluation.objects.create(
        owner=owner,
        awaiting_runtime=awaiting_runtime,
        code=submission.code,
        code_sha256=hashlib.sha256(submission.code.encode("utf-8", errors="surrogatepass")).hexdigest(),
        language=submission.language,
        stdin=submission.stdin,
        files=submission.files,
        args=submission.args,
        env=submission.env,
        priority=submission.priority,
        metadata=submission.metadata,
        name=submission.name,
        labels=submission.labels,
        callback_url=submission.callback_url,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        timeout_s_requested=submission.timeout_s,
        memory_mb_requested=submission.memory_mb,
        cpus_requested=submission.cpus,
        timeout_s=submission.timeout_s or settings.SANDBOX_DEFAULT_TIMEOUT_S,
        memory_mb=submission.memory_mb or settings.SANDBOX_DEFAULT_MEMORY_MB,
        cpus=submission.cpus or min(settings.SANDBOX_DEFAULT_CPUS, settings.SANDBOX_MAX_CPUS),
        pids_limit=settings.SANDBOX_PIDS_LIMIT,
        output_cap_bytes=settings.SANDBOX_OUTPUT_CAP_BYTES,
    )


def job_id(evaluation_id) -> str:
    return f"evaluation-{evaluation_id}"


def job_timeout(evaluation: Evaluation) -> int:
    """RQ's limit on a run job: the evaluation's own timeout (once per test) and room for the rest."""
    return job_timeout_of(evaluation.timeout_s, len(evaluation.tests or []))


def job_timeout_of(timeout_s: float, test_count: int) -> int:
    return int(timeout_s * max(1, test_count)) + 300


class RunJob(NamedTuple):
    """What the work queue gets of an evaluation: its queue, its id, RQ's limit on the job."""

    queue_name: str
    evaluation_id: object
    timeout: int


def _job_data(evaluation_id, timeout: int):
    return Queue.prepare_data(
        "apps.evaluations.jobs.run_evaluation",
        args=(str(evaluation_id),),
        job_id=job_id(evaluation_id),
        timeout=timeout,
        result_ttl=600,
        failure_ttl=24 * 3600,
    )


def enqueue_many(evaluations: list[Evaluation]) -> None:
    """Put the run jobs of ``evaluations`` on their queues in one round trip per queue."""
    enqueue_jobs([RunJob(e.queue_name, e.pk, job_timeout(e)) for e in evaluations])


def enqueue_jobs(run_jobs: list[RunJob]) -> None:
    """Put ``run_jobs`` on their queues in one round trip per queue."""
    by_queue: dict[str, list] = {}
    for run_job in run_jobs:
        by_queue.setdefault(run_job.queue_name, []).append(_job_data(run_job.evaluation_id, run_job.timeout))
    for queue_name, jobs in by_queue.items():
        queue = redis_clients.rq_queue(queue_name)
        with queue.connection.pipeline() as pipe:
            queue.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()


def enqueue(evaluation_id, queue_name: str, timeout: int | None = None) -> None:
    """Put the run job on its queue (one Redis round trip). Only the id travels; the row is the source of
    truth. ``timeout``: the job's (``job_timeout``), when the caller has the row; else it is read."""
    if timeout is None:
        timeout = job_timeout(Evaluation.objects.only("timeout_s", "tests").get(pk=evaluation_id))
    queue = redis_clients.rq_queue(queue_name)
    with queue.connection.pipeline() as pipe:
        queue.enqueue_many([_job_data(evaluation_id, timeout)], pipeline=pipe)
        pipe.execute()


def cancel(evaluation: Evaluation, *, actor=None, request=None) -> Evaluation:
    """Cancel: a queued one never starts; a running one gets SIGTERM, then SIGKILL after a grace."""
    if evaluation.end_queued(Status.CANCELLED, Control.CANCEL):
        _drop_job(evaluation)
        publisher.publish_end(evaluation)
        audit.record("evaluation.cancel", actor=actor, target=evaluation.pk, request=request, was="queued")
    elif evaluation.request_control(Control.CANCEL):
        control_hints.announce_on_commit(evaluation.pk)
        audit.record("evaluation.cancel", actor=actor, target=evaluation.pk, request=request, was="running")
    return evaluation


def stop(
    evaluation: Evaluation, *, actor=None, request=None, control: Control = Control.STOP, via: str = ""
) -> Evaluation:
    """Emergency stop: freeze, keep the evidence, SIGKILL. A queued evaluation is stopped before it starts.
    An emergency stop (``via`` "kill switch" from there) opens or joins the run's safety incident."""
    if evaluation.end_queued(STATUS_FOR_CONTROL[control], control):
        _drop_job(evaluation)
        publisher.publish_end(evaluation)
        audit.record(
            "evaluation.stop", actor=actor, target=evaluation.pk, request=request, was="queued", control=control
        )
    elif evaluation.request_control(control):
        control_hints.announce_on_commit(evaluation.pk)
        audit.record(
            "evaluation.stop", actor=actor, target=evaluation.pk, request=request, was="running", control=control
        )
    else:
        return evaluation
    if control == Control.STOP:
        # The contract: an emergency stop raises an alert (a safety stop's rule already raised its own).
        alert = alerts.raise_emergency_stop_alert(evaluation.pk, actor=actor)
        if alert is not None:
            publisher.publish_alert(evaluation.pk, alert.as_message())
        incidents.open_for_emergency_stop(
            evaluation_id=evaluation.pk, owner_id=evaluation.owner_id, actor=actor, alert=alert, via=via
        )
    return evaluation


def _drop_job(evaluation: Evaluation) -> None:
    """Best effort: take the job off its queue (the job would do nothing anyway: the row is terminal)."""
    try:
        Job.fetch(job_id(evaluation.pk), connection=redis_clients.rq_connection(evaluation.queue_name)).cancel()
    except Exception:
        log.debug("no queued job to drop for %s", evaluation.pk, exc_info=True)


def resubmission_body(evaluation: Evaluation) -> dict:
    """The submission body that runs the same code with the same limits again ("run again")."""
    return {
        "code": evaluation.code,
        "language": evaluation.language,
        "stdin": evaluation.stdin,
        "files": evaluation.files,
        "args": evaluation.args,
        "env": evaluation.env,
        "timeout_s": evaluation.timeout_s,
        "memory_mb": evaluation.memory_mb,
        "cpus": evaluation.cpus,
        "priority": evaluation.priority,
        "metadata": {**evaluation.metadata, "rerun_of": str(evaluation.pk)},
        **({"name": evaluation.name} if evaluation.name else {}),
        **({"labels": list(evaluation.labels)} if evaluation.labels else {}),
    }


COMPARE_OUTPUT_BYTES = 256 * 1024  # enough to compare two runs' output by eye; diffing more is slow


def stdout_text(evaluation: Evaluation, limit: int = COMPARE_OUTPUT_BYTES) -> str:
    """The first ``limit`` bytes of an evaluation's stdout as text (for the comparison page)."""
    pieces, size = [], 0
    for chunk in evaluation.chunks.filter(stream="stdout").order_by("seq").iterator(chunk_size=500):
        data = bytes(chunk.data)
        pieces.append(data[: limit - size])
        size += len(data)
        if size >= limit:
            break
    return b"".join(pieces).decode("utf-8", errors="replace")


def language_names() -> list[str]:
    """Every runtime's name, to filter the list by (disabled ones too: old runs used them)."""
    return list(Runtime.objects.order_by("name").values_list("name", flat=True))


def comparison_rows(left: Evaluation, right: Evaluation) -> list[dict]:
    """What two runs are compared on, one row per fact, ``differs`` where they are not the same."""
    facts = [
        ("Name", lambda e: e.name or "—"),
        ("Labels", lambda e: ", ".join(e.labels or []) or "—"),
        ("Status", lambda e: e.get_status_display()),
        ("Exit code", lambda e: "—" if e.exit_code is None else str(e.exit_code)),
        ("Language", lambda e: e.language),
        ("Timeout", lambda e: f"{e.timeout_s:g} s"),
        ("Memory limit", lambda e: f"{e.memory_mb} MiB"),
        ("CPUs", lambda e: f"{e.cpus:g}"),
        ("Duration", lambda e: "—" if e.duration_ms is None else f"{e.duration_ms} ms"),
        ("Code SHA-256", lambda e: e.code_sha256[:12]),
    ]
    rows = []
    for label, value in facts:
        a, b = value(left), value(right)
        rows.append({"label": label, "left": a, "right": b, "differs": a != b})
    return rows
