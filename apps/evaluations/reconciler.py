"""Repair what crashes leave behind. Idempotent; safe to run from several places at once.

- ``queued`` rows with no live job are enqueued again (nothing accepted is ever lost, even if
  Redis lost its data);
- ``running`` rows whose worker stopped heart-beating end as ``error`` (``worker_lost``);
- containers of this installation that belong to no running evaluation are removed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import django_rq
from django.conf import settings
from django.utils import timezone
from rq.job import Job, JobStatus

from apps.evaluations import publisher, services
from apps.evaluations.models import Evaluation, Status
from apps.monitoring import audit
from apps.sandboxing import containers

log = logging.getLogger(__name__)

# A queued row younger than this may still be between commit and enqueue: leave it alone.
QUEUED_GRACE_S = 5
LIVE_JOB_STATUSES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def _has_live_job(evaluation: Evaluation) -> bool:
    try:
        job = Job.fetch(services.job_id(evaluation.pk), connection=django_rq.get_connection(evaluation.queue_name))
    except Exception:
        return False
    return job.get_status(refresh=False) in LIVE_JOB_STATUSES


def requeue_lost_jobs() -> list[str]:
    cutoff = timezone.now() - timedelta(seconds=QUEUED_GRACE_S)
    requeued = []
    for evaluation in Evaluation.objects.filter(status=Status.QUEUED, created_at__lt=cutoff).only(
        "id", "priority", "timeout_s"
    ):
        if not _has_live_job(evaluation):
            services.enqueue(evaluation.pk, evaluation.queue_name)
            requeued.append(str(evaluation.pk))
            audit.record("reconciler.requeue", target=evaluation.pk)
    return requeued


def end_lost_runs() -> list[str]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S)
    ended = []
    for evaluation in Evaluation.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff):
        if evaluation.fail_with_error("worker_lost", from_statuses=[Status.RUNNING]):
            for container_id, run_id in containers.list_instance_containers():
                if run_id == str(evaluation.pk):
                    containers.remove(container_id)
            publisher.publish_end(evaluation)
            ended.append(str(evaluation.pk))
            audit.record("reconciler.worker_lost", target=evaluation.pk, worker=evaluation.worker)
    return ended


def remove_orphan_containers() -> list[str]:
    removed = []
    for container_id, run_id in containers.list_instance_containers():
        # Only evaluation containers: the sandbox self-check's canaries clean up after themselves.
        if _is_uuid(run_id) and not Evaluation.objects.filter(pk=run_id, status=Status.RUNNING).exists():
            containers.remove(container_id)
            removed.append(container_id)
            audit.record("reconciler.remove_container", target=run_id, container=container_id[:12])
    return removed


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except (TypeError, ValueError):
        return False
    return True


def reconcile() -> dict:
    result = {
        "requeued": requeue_lost_jobs(),
        "worker_lost": end_lost_runs(),
        "orphans_removed": remove_orphan_containers(),
    }
    if any(result.values()):
        log.info("reconciler: %s", result)
    return result
