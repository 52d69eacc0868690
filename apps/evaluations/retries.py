"""The one decision for platform faults: run an interrupted evaluation again once, or end it ``error``.

An interrupted run (its worker died or shut down, the engine failed under it, the worker hit a bug)
is run again from the start while ``attempts < EVALUATION_MAX_ATTEMPTS``: its output so far is
kept, a notice chunk on stderr marks where the next attempt starts, and the next attempt continues
the ``seq`` numbers, so output stays append-only (a live viewer never sees a ``seq`` twice or a
gap). Otherwise the row ends ``error`` with the reason. A pending cancel/stop wins over a retry.
Every decision is logged and audited.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from apps.audit import services as audit
from apps.evaluations import publisher
from apps.evaluations.models import STATUS_FOR_CONTROL, Control, Evaluation, OutputChunk, Reason, Status

log = logging.getLogger(__name__)


class RetryDecision(StrEnum):
    REQUEUED = "requeued"  # it waits in its queue for the next attempt
    ENDED = "ended"  # error, or the cancel/stop that was pending


# A pending request decides the end instead of the fault.
REASON_FOR_CONTROL = {
    Control.CANCEL: Reason.CANCELLED,
    Control.STOP: Reason.STOPPED,
    Control.SAFETY_STOP: Reason.SAFETY_RULE,
}


def next_seq(evaluation_id) -> int:
    return (OutputChunk.objects.filter(evaluation_id=evaluation_id).aggregate(m=Max("seq"))["m"] or 0) + 1


def retry_or_fail(
    evaluation: Evaluation, reason: Reason, detail: str, *, by: str, attempt: int | None = None
) -> RetryDecision | None:
    """A platform fault interrupted ``evaluation`` (running): run it again once, or end it ``error``.

    ``reason`` is what the row ends with if it is not run again; ``detail`` says it for people (the
    notice and ``error``); ``by`` names the decider (reconciler, worker). None: the row was not this
    attempt's any more, someone else decided.
    """
    attempt = evaluation.attempts if attempt is None else attempt
    evaluation.refresh_from_db()
    if evaluation.status != Status.RUNNING or evaluation.attempts != attempt:
        return None
    worker = evaluation.worker
    if evaluation.control:
        decision = _end_as_requested(evaluation, detail, attempt)
    elif attempt < settings.EVALUATION_MAX_ATTEMPTS:
        decision = _requeue(evaluation, detail, attempt)
        if decision is None and _control_arrived(evaluation, attempt):
            return retry_or_fail(evaluation, reason, detail, by=by, attempt=attempt)
    elif evaluation.fail_with_error(detail, from_statuses=[Status.RUNNING], reason=reason, attempt=attempt):
        decision = RetryDecision.ENDED
    else:
        decision = None
    if decision is not None:
        _decided(evaluation, decision, detail, by, attempt, worker)
    return decision


def _end_as_requested(evaluation: Evaluation, detail: str, attempt: int) -> RetryDecision | None:
    """The user asked to cancel or stop it: that is what happens, not a retry."""
    control = Control(evaluation.control)
    ended = evaluation.finish(
        STATUS_FOR_CONTROL[control],
        reason=REASON_FOR_CONTROL[control],
        attempt=attempt,
        error=f"{detail} (while a {control} was pending)",
    )
    return RetryDecision.ENDED if ended else None


def _requeue(evaluation: Evaluation, detail: str, attempt: int) -> RetryDecision | None:
    """Back to the queue with a notice chunk, in one transaction; None if the row could not be requeued."""
    notice = (
        f"\n[crucible] {detail}: this evaluation is run again from the start "
        f"(attempt {attempt + 1} of {settings.EVALUATION_MAX_ATTEMPTS}); the output above is "
        "from the interrupted attempt.\n"
    ).encode()
    try:
        with transaction.atomic():
            chunk = OutputChunk.objects.create(
                evaluation=evaluation, seq=next_seq(evaluation.pk), stream="stderr", data=notice
            )
            if not evaluation.requeue(attempt=attempt):
                raise _NotRequeued
    except (_NotRequeued, IntegrityError):
        evaluation.refresh_from_db()
        return None
    publisher.publish_log(evaluation.pk, chunk.seq, chunk.stream, chunk.text)
    publisher.publish_status(evaluation)
    return RetryDecision.REQUEUED


def _control_arrived(evaluation: Evaluation, attempt: int) -> bool:
    """A cancel/stop that came in while we decided: still our row, so it is ended as asked."""
    return evaluation.status == Status.RUNNING and evaluation.attempts == attempt and bool(evaluation.control)


class _NotRequeued(Exception):
    pass


def _decided(evaluation: Evaluation, decision: RetryDecision, detail: str, by: str, attempt: int, worker: str) -> None:
    log.warning(
        "evaluation %s: %s after attempt %d (%s) -> %s, decided by %s",
        evaluation.pk,
        detail,
        attempt,
        decision,
        evaluation.status,
        by,
    )
    audit.record(
        f"evaluation.{'retry' if decision == RetryDecision.REQUEUED else 'platform_fault'}",
        target=evaluation.pk,
        reason=detail,
        attempt=attempt,
        decided_by=by,
        status=evaluation.status,
        worker=worker,
    )
    if decision == RetryDecision.ENDED:
        publisher.publish_end(evaluation)
