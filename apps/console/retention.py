"""The retention policy: records older than ``RETENTION_DAYS`` are deleted, and metrics do not jump.

What goes, once it is that old (counted from when it ended):
- an evaluation that reached a terminal status, with its output chunks, artifacts, test results,
  resource samples and platform timings (an evaluation of a batch goes with its batch);
- a batch that is final, with all its samples;
- an ended session, with its transcript;
- a completion callback delivery that is no longer pending.
What stays: users, tasks, alerts, the audit log and safety incidents (the security record), the runs
and sessions that have an incident (with their output, artifacts and samples: the evidence) and the
batches holding such a run, and anything still queued, running or live.

Metrics are computed from rows at scrape time; before rows are deleted, what they counted is added
to ``MetricCarry`` in the same transaction, and the scrape adds it back (``apps.console.metrics``),
so a counter never goes down. The reconciler (``crucible.cron``) calls ``prune`` now and then;
each call deletes at most ``RETENTION_BATCH`` rows of each kind, oldest first.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.console.metrics import EVALUATION_COUNTERS, HISTOGRAMS, SESSION_COUNTERS
from apps.evaluations.models import TERMINAL_STATUSES, CallbackDelivery, DeliveryStatus, Evaluation
from apps.monitoring.models import Incident, ResourceSample, RunTiming
from apps.sessions.models import LIVE_STATUSES, Session
from apps.tasks.models import Batch, BatchStatus

log = logging.getLogger(__name__)

FINAL_BATCH_STATUSES = (BatchStatus.COMPLETED, BatchStatus.CANCELLED)


def cutoff(now: datetime | None = None) -> datetime | None:
    """Records that ended before this are pruned; None while the policy is off (RETENTION_DAYS=0)."""
    if not settings.RETENTION_DAYS:
        return None
    return (now or timezone.now()) - timedelta(days=settings.RETENTION_DAYS)


def prune(now: datetime | None = None) -> dict[str, int]:
    """One pass of the policy: how many evaluations, batches, sessions, deliveries it deleted."""
    before = cutoff(now)
    if before is None:
        return {}
    limit = settings.RETENTION_BATCH
    pruned = {
        "evaluations": prune_evaluations(before, limit),
        "batches": prune_batches(before, limit),
        "sessions": prune_sessions(before, limit),
        "callback_deliveries": prune_deliveries(before, limit),
    }
    if any(pruned.values()):
        log.info("retention: pruned %s (ended before %s)", pruned, before.isoformat())
    return pruned


def _has_incident(field: str = "pk") -> Exists:
    """The run (an evaluation's id at ``field``) has a safety incident: its record is evidence and stays."""
    return Exists(Incident.objects.filter(evaluation_id=OuterRef(field)))


def prune_evaluations(before: datetime, limit: int) -> int:
    """Terminal evaluations outside batches that finished before ``before``, oldest first."""
    with transaction.atomic():
        ids = list(
            Evaluation.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=before, batch_id__isnull=True)
            .exclude(_has_incident())
            .order_by("finished_at")
            .values_list("pk", flat=True)[:limit]
        )
        delete_evaluations(ids)
    return len(ids)


def prune_batches(before: datetime, limit: int) -> int:
    """Final batches that finished before ``before``, each with every sample (one transaction each)."""
    done = list(
        Batch.objects.filter(status__in=FINAL_BATCH_STATUSES, finished_at__lt=before)
        .exclude(Exists(Evaluation.objects.filter(batch_id=OuterRef("pk")).filter(_has_incident())))
        .order_by("finished_at")
        .values_list("pk", flat=True)[:limit]
    )
    for batch_id in done:
        with transaction.atomic():
            delete_evaluations(list(Evaluation.objects.filter(batch_id=batch_id).values_list("pk", flat=True)))
            Batch.objects.filter(pk=batch_id).delete()
    return len(done)


def delete_evaluations(ids: list) -> None:
    """Delete these evaluations and everything recorded about them, carrying their metrics first."""
    if not ids:
        return
    rows = Evaluation.objects.filter(pk__in=ids)
    for counter in EVALUATION_COUNTERS:
        counter.carry(rows)
    for histogram in HISTOGRAMS:
        histogram.carry(ids)
    ResourceSample.objects.filter(evaluation_id__in=ids).delete()
    RunTiming.objects.filter(evaluation_id__in=ids).delete()
    rows.delete()  # output chunks, artifacts and test results go with them (ON DELETE CASCADE)


def prune_sessions(before: datetime, limit: int) -> int:
    """Ended sessions that ended before ``before``, with their transcripts."""
    with transaction.atomic():
        ids = list(
            Session.objects.exclude(status__in=LIVE_STATUSES)
            .exclude(Exists(Incident.objects.filter(session_id=OuterRef("pk"))))
            .filter(ended_at__lt=before)
            .order_by("ended_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            rows = Session.objects.filter(pk__in=ids)
            for counter in SESSION_COUNTERS:
                counter.carry(rows)
            rows.delete()
    return len(ids)


def prune_deliveries(before: datetime, limit: int) -> int:
    """Callback deliveries that are settled (delivered or failed) and older than ``before``."""
    ids = list(
        CallbackDelivery.objects.exclude(status=DeliveryStatus.PENDING)
        .filter(created_at__lt=before)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    CallbackDelivery.objects.filter(pk__in=ids).delete()
    return len(ids)
