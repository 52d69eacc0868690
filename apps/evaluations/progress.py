"""Where an unfinished evaluation stands: its place in the queue and an estimate of its wait while
queued; elapsed time, output so far and peak memory while it runs.

The detail page shows this (``templates/evaluations/_progress.html``, polled while the run is
active) and the detail API reports it as ``progress``. Everything here is read from rows that
already exist (queued rows, recent finished runs, stored output chunks, resource samples); it is
an estimate for people, never an input to scheduling.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.db.models import Max, Q, Sum
from django.db.models.functions import Length
from django.utils import timezone

from apps.evaluations.dispatch import PRIORITY_ORDER
from apps.evaluations.models import Evaluation, OutputChunk, Priority, Status
from apps.monitoring.models import ResourceSample

RECENT_RUNS = 50  # the durations an estimate is based on: this many latest finished runs …
RECENT_WINDOW = timedelta(days=1)  # … within this window


@dataclass(frozen=True)
class QueueProgress:
    """A queued run: ``position`` 1 is next; ``estimated_wait_s`` is None without recent runs to go by."""

    position: int
    queued_total: int
    running: int
    estimated_wait_s: int | None
    typical_run_s: float | None


@dataclass(frozen=True)
class RunProgress:
    """A running run: how long it has run against its timeout, its output so far and its peak memory."""

    elapsed_s: float
    timeout_s: float
    output_bytes: int
    peak_memory_bytes: int | None
    memory_limit_bytes: int


def _more_urgent(priority: str) -> list[str]:
    """The priorities whose queues a worker serves before ``priority``'s."""
    rank = PRIORITY_ORDER[Priority(priority)]
    return [str(p) for p, r in PRIORITY_ORDER.items() if r < rank]


def queue_position(evaluation: Evaluation) -> int:
    """1 + the queued runs a worker takes before this one: those on a more urgent queue, and older ones
    on the same queue. A held batch sample also waits behind its owner's older held samples."""
    queued = Evaluation.objects.filter(status=Status.QUEUED).exclude(pk=evaluation.pk)
    earlier = Q(created_at__lt=evaluation.created_at) | Q(created_at=evaluation.created_at, pk__lt=evaluation.pk)
    same_queue_earlier = Q(priority=evaluation.priority) & earlier
    ahead = Q(held=False) & (Q(priority__in=_more_urgent(evaluation.priority)) | same_queue_earlier)
    if evaluation.held:
        ahead |= Q(held=True, owner_id=evaluation.owner_id) & earlier
    return 1 + queued.filter(ahead).count()


def typical_run_s() -> float | None:
    """The median duration of the latest finished runs (seconds), or None if nothing ran lately."""
    since = timezone.now() - RECENT_WINDOW
    durations = list(
        Evaluation.objects.filter(finished_at__gte=since, duration_ms__isnull=False, started_at__isnull=False)
        .order_by("-finished_at")
        .values_list("duration_ms", flat=True)[:RECENT_RUNS]
    )
    return statistics.median(durations) / 1000 if durations else None


def queue_progress(evaluation: Evaluation) -> QueueProgress:
    """Position and estimated wait: the runs ahead shared among the runs going on now (at least one
    slot), each taking the typical recent duration."""
    position = queue_position(evaluation)
    running = Evaluation.objects.filter(status=Status.RUNNING).count()
    typical = typical_run_s()
    wait = None
    if typical is not None:
        wait = round((position - 1) * typical / max(1, running) + (typical / 2 if running else 0))
    return QueueProgress(
        position=position,
        queued_total=Evaluation.objects.filter(status=Status.QUEUED).count(),
        running=running,
        estimated_wait_s=wait,
        typical_run_s=round(typical, 3) if typical is not None else None,
    )


def run_progress(evaluation: Evaluation) -> RunProgress:
    """Elapsed time, the output stored so far (bytes) and the highest memory sample so far."""
    started = evaluation.started_at or timezone.now()
    output = OutputChunk.objects.filter(evaluation_id=evaluation.pk).aggregate(total=Sum(Length("data")))["total"]
    peak = ResourceSample.objects.filter(evaluation_id=evaluation.pk).aggregate(peak=Max("memory_bytes"))["peak"]
    return RunProgress(
        elapsed_s=round(max(0.0, (timezone.now() - started).total_seconds()), 1),
        timeout_s=evaluation.timeout_s,
        output_bytes=int(output or 0),
        peak_memory_bytes=peak,
        memory_limit_bytes=evaluation.memory_mb * 1024 * 1024,
    )


def progress_of(evaluation: Evaluation) -> QueueProgress | RunProgress | None:
    """The progress that fits the status: a queue estimate, a run's usage, or None once it ended."""
    if evaluation.status == Status.QUEUED:
        return queue_progress(evaluation)
    if evaluation.status == Status.RUNNING:
        return run_progress(evaluation)
    return None


def as_payload(progress: QueueProgress | RunProgress | None) -> dict | None:
    """The API shape: the dataclass's fields plus ``kind`` (``queued`` or ``running``)."""
    if progress is None:
        return None
    kind = "queued" if isinstance(progress, QueueProgress) else "running"
    return {"kind": kind, **asdict(progress)}


def human_duration(seconds: float | None) -> str:
    """A rough duration for people: "under a minute", "about 3 min", "about 1 h 20 min"."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"
