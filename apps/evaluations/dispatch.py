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

A run that keeps its batch's sandbox for the next sample (``reuse: "batch"``) runs inside ``keeping()``
and names its batch there (``Keep.batch_id``): the release its end makes keeps the first sample it
releases of that batch for the run's job instead of enqueueing it, and the job runs it next, in that sandbox,
without the round trip through the queue. Only while no other run waits (queued and released, not
parked for its runtime's build: ``_RELEASE_SQL``'s ``others``, and none released outside the batch by
that release): a run of another owner, or of another batch, is never passed by a sample that was
released after it. A kept sample counts in its owner's window like an enqueued one; one its job does
not run after all (the worker stops) is enqueued when ``keeping`` ends, and one whose worker died
meanwhile is a queued row without a job, which the reconciler enqueues.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from apps.evaluations import services
from apps.evaluations.models import ACTIVE_STATUSES, QUEUE_FOR_PRIORITY, Evaluation, Priority, Status

log = logging.getLogger(__name__)

PRIORITY_ORDER = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
ADVISORY_LOCK_SPACE = 0x0C5B  # the first key of pg_advisory_xact_lock(int, int): ours


@dataclass
class Keep:
    """A job's claim on its batch's next released sample (``keeping``): ``batch_id`` once the job may
    run one (set by the run that reuses the batch's sandbox), ``kept`` once a release kept it."""

    batch_id: object = None
    kept: services.RunJob | None = None

    def take(self) -> services.RunJob | None:
        """The kept sample, now the job's to run (no longer enqueued when ``keeping`` ends)."""
        kept, self.kept = self.kept, None
        return kept


_keep: ContextVar[Keep | None] = ContextVar("dispatch_keep", default=None)


@contextmanager
def keeping() -> Iterator[Keep]:
    """Within the block, the first sample a release of this thread releases of ``Keep.batch_id`` is
    kept for the caller; one the caller did not ``take`` is enqueued when the block ends."""
    keep = Keep()
    token = _keep.set(keep)
    try:
        yield keep
    finally:
        _keep.reset(token)
        if keep.kept is not None:
            _enqueue_untaken(keep.take())


def _enqueue_untaken(job: services.RunJob) -> None:
    """Never raises: a kept sample Redis did not take is a queued row without a job (the reconciler's)."""
    try:
        services.enqueue_jobs([job])
    except Exception:
        log.warning("could not enqueue kept sample %s; the reconciler will", job.evaluation_id, exc_info=True)


def release(owner_id: int) -> list[str]:
    """Release the owner's next held rows, up to the window; returns their ids (enqueued on commit, but
    the one a ``keeping`` block of this thread keeps).

    One statement under the lock: the room left in the window, the oldest held rows (four times the
    room, the most urgent of them first), and the conditional UPDATE of those (it runs after every
    sample of a batch: as five queries it was about 2 ms of a worker's CPU even with nothing held)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_SPACE, owner_id])
            cursor.execute(_RELEASE_SQL, _release_params(owner_id))
            rows = sorted(cursor.fetchall(), key=lambda row: (PRIORITY_ORDER[Priority(row[1])], row[4], row[0]))
            released = [
                services.RunJob(QUEUE_FOR_PRIORITY[Priority(priority)], pk, services.job_timeout_of(timeout_s, tests))
                for pk, priority, timeout_s, tests, _created_at, _batch_id, _others in rows  # in the order chosen
            ]
            enqueued = _keep_one(released, [row[5] for row in rows], others=bool(rows) and rows[0][6])
        if enqueued:
            transaction.on_commit(lambda: services.enqueue_jobs(enqueued))
    return [str(job.evaluation_id) for job in released]


def _keep_one(released: list[services.RunJob], batch_ids: list, *, others: bool) -> list[services.RunJob]:
    """What of ``released`` goes onto the queues: all of it, but the sample a ``keeping`` block of this
    thread keeps (the first of its batch, when no other run waits: none was released and queued
    outside the batch before this release, ``others``, nor by it)."""
    keep = _keep.get()
    if keep is None or keep.batch_id is None or keep.kept is not None:
        return released
    of_batch = [at for at, batch_id in enumerate(batch_ids) if batch_id == keep.batch_id]
    if not of_batch or others or any(batch_id != keep.batch_id for batch_id in batch_ids):
        return released
    keep.kept = released[of_batch[0]]
    return released[: of_batch[0]] + released[of_batch[0] + 1 :]


def keeps_a_sample_of(batch_id) -> bool:
    """Whether this thread's job holds a kept sample of ``batch_id``: that batch has one queued."""
    keep = _keep.get()
    return keep is not None and keep.kept is not None and keep.batch_id == batch_id


# The table's name is the model's, never input; everything else is a parameter.
_RELEASE_SQL = f"""
WITH room AS (
    SELECT greatest(%(window)s - count(*), 0) AS n FROM {Evaluation._meta.db_table}
    WHERE owner_id = %(owner)s AND batch_id IS NOT NULL AND NOT held AND status = ANY(%(active)s)
), oldest AS (
    SELECT id, priority, created_at FROM {Evaluation._meta.db_table}
    WHERE owner_id = %(owner)s AND status = %(queued)s AND held
    ORDER BY created_at, id LIMIT (SELECT n * 4 FROM room)
), chosen AS (
    SELECT id FROM oldest ORDER BY array_position(%(most_urgent_first)s, priority), created_at, id
    LIMIT (SELECT n FROM room)
), others AS (
    SELECT %(keep_batch)s::uuid IS NOT NULL AND EXISTS (
        SELECT 1 FROM {Evaluation._meta.db_table}
        WHERE status = %(queued)s AND NOT held AND NOT awaiting_runtime
        AND batch_id IS DISTINCT FROM %(keep_batch)s::uuid
    ) AS waiting
)
UPDATE {Evaluation._meta.db_table} SET held = false
WHERE id IN (SELECT id FROM chosen) AND status = %(queued)s AND held
RETURNING id, priority, timeout_s, jsonb_array_length(tests), created_at, batch_id, (SELECT waiting FROM others)
"""  # noqa: S608


def _release_params(owner_id: int) -> dict:
    keep = _keep.get()
    return {
        # The batch a ``keeping`` block of this thread may keep a sample of: are others waiting?
        "keep_batch": keep.batch_id if keep is not None and keep.kept is None else None,
        "window": settings.FAIR_SHARE_WINDOW,
        "owner": owner_id,
        "active": [str(s) for s in ACTIVE_STATUSES],
        "queued": str(Status.QUEUED),
        "most_urgent_first": [str(p) for p in sorted(PRIORITY_ORDER, key=PRIORITY_ORDER.get)],
    }


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
