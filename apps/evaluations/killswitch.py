"""The kill switch: one operator action that stops every running evaluation and pauses the queues.

The switch *is* RQ's worker suspension flag in Redis (``rq.suspension``): while it is set, no worker
takes a job, so queued evaluations stay queued (their rows and jobs are kept) until ``release()``.
The order matters: suspend first, then stop what runs, so no worker starts something new in
between; a worker that had already taken a job checks the switch again before claiming its row
(``running.run``) and leaves the row queued (the reconciler re-enqueues it after release).
"""

from __future__ import annotations

import logging

from rq.suspension import is_suspended, resume, suspend

from apps.audit import services as audit
from apps.evaluations import services
from apps.evaluations.models import Evaluation, Status
from crucible import redis_clients

log = logging.getLogger(__name__)


def _connection():
    return redis_clients.rq_connection()


def is_engaged() -> bool:
    return bool(is_suspended(_connection()))


def engage(actor=None, request=None) -> list[str]:
    """Pause the queues and emergency-stop every running evaluation; returns the ids stopped."""
    was_engaged = is_engaged()
    suspend(_connection())
    stopped = []
    running = Evaluation.objects.filter(status=Status.RUNNING).only("id", "status", "control", "priority", "owner_id")
    for evaluation in running:
        services.stop(evaluation, actor=actor, request=request, via="kill switch")
        stopped.append(str(evaluation.pk))
    queued = Evaluation.objects.filter(status=Status.QUEUED).count()
    audit.record(
        "killswitch.engage",
        actor=actor,
        target="killswitch",
        request=request,
        stopped=stopped,
        queued_kept=queued,
        already_engaged=was_engaged,
    )
    log.warning("kill switch engaged by %s: %d stopped, %d queued kept", actor, len(stopped), queued)
    return stopped


def release(actor=None, request=None) -> None:
    """Resume the queues: workers take queued evaluations again."""
    was_engaged = is_engaged()
    resume(_connection())
    audit.record("killswitch.release", actor=actor, target="killswitch", request=request, was_engaged=was_engaged)
    log.warning("kill switch released by %s", actor)


def state() -> dict:
    return {
        "engaged": is_engaged(),
        "running": Evaluation.objects.filter(status=Status.RUNNING).count(),
        "queued": Evaluation.objects.filter(status=Status.QUEUED).count(),
    }
