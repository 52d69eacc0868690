"""The evaluation's own callback: ``{"type": "evaluation.finished", "evaluation": {…detail…}}``.

``evaluation_finished`` is called where every terminal path passes (``publisher.publish_end``); it
schedules the delivery once per evaluation (``delivery.schedule`` is idempotent per event and
subject). ``schedule_missed`` is the reconciler's net for an end whose process died between the
terminal transition and that call.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import CharField, Exists, OuterRef
from django.db.models.functions import Cast
from django.utils import timezone

from apps.evaluations.api.serializers import EvaluationProgressSerializer
from apps.evaluations.callbacks import delivery
from apps.evaluations.models import TERMINAL_STATUSES, CallbackDelivery, Evaluation

log = logging.getLogger(__name__)

EVALUATION_FINISHED = "evaluation.finished"
# How far back the reconciler looks for ended evaluations whose callback was never scheduled.
MISSED_WINDOW = timedelta(days=1)


def payload(evaluation: Evaluation) -> dict:
    """What is POSTed: the same detail as ``GET /api/v1/evaluations/{id}/``."""
    return {"type": EVALUATION_FINISHED, "evaluation": EvaluationProgressSerializer(evaluation).data}


def evaluation_finished(evaluation: Evaluation) -> CallbackDelivery | None:
    """Schedule the ``evaluation.finished`` callback of ``evaluation`` if it ended and asked for one.

    Never raises: the run's end is recorded whatever happens here, and ``schedule_missed`` catches up."""
    try:
        if not evaluation.callback_url or not evaluation.is_terminal:
            return None
        fresh = Evaluation.objects.select_related("owner").get(pk=evaluation.pk)
        with transaction.atomic():
            return delivery.schedule(fresh.owner, fresh.callback_url, EVALUATION_FINISHED, fresh.pk, payload(fresh))
    except Exception:
        log.exception("could not schedule the callback of evaluation %s; the reconciler will", evaluation.pk)
        return None


def schedule_missed() -> list[str]:
    """Ended evaluations (of the last day) with a ``callback_url`` and no delivery yet, older than the
    sweep's grace: schedule them now. Returns their ids."""
    now = timezone.now()
    scheduled = CallbackDelivery.objects.filter(
        event_type=EVALUATION_FINISHED, subject_id=Cast(OuterRef("pk"), CharField())
    )
    missed = (
        Evaluation.objects.filter(
            created_at__gte=now - MISSED_WINDOW,
            status__in=TERMINAL_STATUSES,
            finished_at__lte=now - timedelta(seconds=delivery.SWEEP_GRACE_S),
        )
        .exclude(callback_url="")
        .filter(~Exists(scheduled))
        .only("pk", "status", "callback_url")[: delivery.SWEEP_BATCH]
    )
    return [str(e.pk) for e in missed if evaluation_finished(e) is not None]


def sweep() -> list[str]:
    """The reconciler's pass over callbacks: missed evaluation ends are scheduled, lost attempts enqueued
    again; returns the evaluation ids and delivery ids acted on."""
    return schedule_missed() + delivery.sweep()
