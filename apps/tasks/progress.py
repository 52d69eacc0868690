"""Where a batch stands: counts per status, passed, pass@k; its end; its live progress stream.

Every sample's end (``signals.evaluation_ended``) publishes the batch's progress to its group
(``WS /ws/batches/{id}/``) and, once no sample is waiting or running, ends the batch
(``completed``, a conditional UPDATE: once) and schedules its ``batch.finished`` callback.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db.models import Count, Q
from django.utils import timezone

from apps.evaluations import dispatch
from apps.evaluations.callbacks import delivery
from apps.evaluations.models import ACTIVE_STATUSES, Evaluation, Status
from apps.tasks import passatk
from apps.tasks.models import Batch, BatchStatus

log = logging.getLogger(__name__)

NOT_JUDGED = (Status.CANCELLED, Status.STOPPED)
PROGRESS_EVERY_S = 1  # ended before their tests could say anything


def group_name(batch_id) -> str:
    return f"batch.{batch_id}"


def counts(batch: Batch) -> dict[str, int]:
    """How many samples are in each evaluation status (every status present, zeros included)."""
    rows = Evaluation.objects.filter(batch_id=batch.pk).values("status").annotate(n=Count("pk"))
    found = {row["status"]: row["n"] for row in rows}
    return {status.value: found.get(status.value, 0) for status in Status}


def per_task(batch: Batch) -> dict[str, dict]:
    """{task: {"samples", "judged", "passed"}} over the batch's samples."""
    rows = (
        Evaluation.objects.filter(batch_id=batch.pk)
        .values("task")
        .annotate(
            samples=Count("pk"),
            judged=Count("pk", filter=~Q(status__in=[*ACTIVE_STATUSES, *NOT_JUDGED])),
            passed=Count("pk", filter=Q(passed=True)),
        )
        .order_by("task")
    )
    return {row["task"]: {"samples": row["samples"], "judged": row["judged"], "passed": row["passed"]} for row in rows}


def status_of(batch: Batch, by_status: dict[str, int]) -> str:
    if batch.is_final:
        return batch.status
    if by_status[Status.QUEUED] == batch.total:
        return BatchStatus.QUEUED
    return BatchStatus.RUNNING


def summary(batch: Batch) -> dict:
    """The batch as the API and the progress stream show it."""
    by_status = counts(batch)
    tasks = per_task(batch)
    values, short = passatk.pass_at_k({t: (v["judged"], v["passed"]) for t, v in tasks.items()}, batch.k)
    ended = sum(n for status, n in by_status.items() if status not in ACTIVE_STATUSES)
    return {
        "id": str(batch.pk),
        "status": status_of(batch, by_status),
        "total": batch.total,
        "ended": ended,
        "counts": by_status,
        "passed": sum(v["passed"] for v in tasks.values()),
        "pass_at_k": values,
        "pass_at_k_not_computable": {
            k: f"fewer than {k} judged samples for {', '.join(v[:5])}" for k, v in short.items()
        },
        "tasks": tasks,
    }


def progress_message(batch: Batch) -> dict:
    data = summary(batch)
    return {
        "type": "end" if batch.is_final else "progress",
        "status": data["status"],
        "counts": data["counts"],
        "passed": data["passed"],
        "total": data["total"],
        "ended": data["ended"],
        "pass_at_k": data["pass_at_k"],
    }


def publish(batch: Batch) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(
            group_name(batch.pk), {"type": "batch.event", "event": progress_message(batch)}
        )
    except Exception:
        log.warning("could not publish the progress of batch %s", batch.pk, exc_info=True)


def _active_samples(batch_pk):
    return Evaluation.objects.filter(batch_id=batch_pk, status__in=ACTIVE_STATUSES)


def finish_if_done(batch: Batch) -> bool:
    """queued/running -> completed once no sample waits or runs; schedules the callback. Once.
    Whether a sample still does may come with the batch (``busy``, read by the caller)."""
    busy = getattr(batch, "busy", None)
    if busy if busy is not None else _active_samples(batch.pk).exists():
        return False
    changed = Batch.objects.filter(pk=batch.pk, status__in=[BatchStatus.QUEUED, BatchStatus.RUNNING]).update(
        status=BatchStatus.COMPLETED, finished_at=timezone.now()
    )
    batch.refresh_from_db()
    if changed or batch.status == BatchStatus.CANCELLED:
        schedule_callback(batch)
    return bool(changed)


def schedule_callback(batch: Batch) -> None:
    if not batch.callback_url:
        return
    try:
        delivery.schedule(
            batch.owner,
            batch.callback_url,
            "batch.finished",
            batch.pk,
            {"type": "batch.finished", "batch": summary(batch)},
        )
    except Exception:
        log.warning("could not schedule the callback of batch %s", batch.pk, exc_info=True)


def on_evaluation_ended(sender, evaluation: Evaluation, **_kwargs) -> None:
    """``signals.evaluation_ended`` receiver: a sample of a batch ended. Progress is counted over the
    whole batch, so it is published at most once per ``PROGRESS_EVERY_S`` while samples end (a
    10 000-sample batch would otherwise count 10 000 times), and always at the end; viewers also
    get it with every heartbeat."""
    if evaluation.batch_id is None:
        return
    # A sample of the batch kept for this job to run next (released as this one ended) is queued.
    busy = dispatch.keeps_a_sample_of(evaluation.batch_id) or _active_samples(evaluation.batch_id).exists()
    if busy and not due(evaluation.batch_id):
        return  # the batch goes on, and its progress was published less than PROGRESS_EVERY_S ago
    batch = Batch.objects.filter(pk=evaluation.batch_id).select_related("owner").first()
    if batch is None:
        return
    batch.busy = busy
    if finish_if_done(batch) or batch.is_final or busy:
        publish(batch)


def due(batch_id) -> bool:
    """True at most once per ``PROGRESS_EVERY_S`` per batch (across workers: a Redis key)."""
    try:
        return cache.add(f"batch-progress:{batch_id}", 1, timeout=PROGRESS_EVERY_S)
    except Exception:
        return True
