"""Fair dispatch: many queued evaluations of one owner never starve another owner's run.

Samples of a batch are written ``held``: queued, but not on a work queue yet. ``release(owner)``
moves the owner's oldest held rows (most urgent priority first) onto the work queues, as many as
keep ``FAIR_SHARE_WINDOW`` of that owner's released samples waiting or running at once; each one
that ends releases the next (``release_after``, on ``signals.evaluation_ended``). A run of another
owner is therefore queued behind at most a window of each busy owner's samples, never behind a
whole batch, and workers stay busy as long as any owner has work. The reconciler releases what a
lost release left held (``release_all``).

The release is a conditional UPDATE (``held`` true -> false) under a per-owner advisory lock, so
concurrent releases never overshoot the window and a row is enqueued once.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection, transaction

from apps.evaluations import services
from apps.evaluations.models import ACTIVE_STATUSES, Evaluation, Priority, Status

log = logging.getLogger(__name__)

PRIORITY_ORDER = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
ADVISORY_LOCK_SPACE = 0x0C5B  # the first key of pg_advisory_xact_lock(int, int): ours


def in_flight(owner_id: int) -> int:
    """The owner's batch samples released onto a queue and not yet ended."""
    return Evaluation.objects.filter(
        owner_id=owner_id, batch_id__isnull=False, held=False, status__in=ACTIVE_STATUSES
    ).count()


def release(owner_id: int) -> list[str]:
    """Release the owner's next held rows, up to the window; returns their ids (enqueued on commit)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_SPACE, owner_id])
        room = settings.FAIR_SHARE_WINDOW - in_flight(owner_id)
        if room <= 0:
            return []
        held = Evaluation.objects.filter(owner_id=owner_id, status=Status.QUEUED, held=True)
        candidates = list(held.order_by("created_at", "pk").values_list("pk", "priority")[: room * 4])
        chosen = [pk for pk, _ in sorted(candidates, key=lambda row: PRIORITY_ORDER[Priority(row[1])])[:room]]
        if not chosen:
            return []
        Evaluation.objects.filter(pk__in=chosen, status=Status.QUEUED, held=True).update(held=False)
        released = list(Evaluation.objects.filter(pk__in=chosen).only("pk", "priority", "timeout_s", "tests"))
        transaction.on_commit(lambda: services.enqueue_many(released))
    return [str(e.pk) for e in released]


def on_evaluation_ended(sender, evaluation: Evaluation, **_kwargs) -> None:
    """``signals.evaluation_ended`` receiver."""
    release_after(evaluation)


def release_after(evaluation: Evaluation) -> None:
    """A sample ended: its owner's next held one may go. Never raises (the end is recorded already)."""
    if evaluation.batch_id is None:
        return
    try:
        release(evaluation.owner_id)
    except Exception:
        log.warning("could not release held evaluations of owner %s", evaluation.owner_id, exc_info=True)


def release_all() -> list[str]:
    """Release for every owner with held rows (the reconciler's pass; a lost release is repaired)."""
    owners = Evaluation.objects.filter(held=True, status=Status.QUEUED).values_list("owner_id", flat=True).distinct()
    released = []
    for owner_id in owners:
        released += release(owner_id)
    return released
