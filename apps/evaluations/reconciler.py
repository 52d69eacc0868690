"""Repair what crashes leave behind. Idempotent; safe to run from several places at once.

- ``queued`` rows with no live job are enqueued again (nothing accepted is ever lost, even if
  Redis lost its data);
- ``running`` rows whose worker stopped heart-beating (no heartbeat for ``WORKER_LOST_AFTER_S``) are
  run again once, or end as ``error`` (``worker_lost``) after ``EVALUATION_MAX_ATTEMPTS`` claims (see
  ``retries.retry_or_fail``); their container is removed first;
- containers of this installation that belong to no running evaluation are removed (a batch's sandbox
  a worker keeps for its next sample belongs to that worker, not to a run: it goes with the worker's
  pool once the worker is gone, or with its lost run, unless the worker still has a live run), and so
  are the sandbox self-check's canaries that an engine that went away under them left behind;
- runtime image builds whose builder died are handed back, lost build jobs enqueued again, and
  runs that wait for a build that ended are released or ended (``builds.reconcile``);
- completion callbacks whose scheduling or attempt was lost (a process died, Redis lost its data) are
  scheduled or enqueued again (``callbacks.events.sweep``).

It runs every ``RECONCILE_INTERVAL_S`` and once at start-up (``python -m crucible.cron``), so a dead
worker's run is acted on within ``WORKER_LOST_AFTER_S + RECONCILE_INTERVAL_S`` and a lost job or an
orphan container within ``RECONCILE_INTERVAL_S`` (plus ``QUEUED_GRACE_S`` for a just-accepted row).
Every decision is logged and audited.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rq import Worker
from rq.job import Job, JobStatus

from apps.audit import services as audit
from apps.evaluations import builds, dispatch, killswitch, retries, services
from apps.evaluations.callbacks import events as callback_events
from apps.evaluations.models import Evaluation, Reason, Status
from apps.evaluations.retries import RetryDecision
from apps.sandboxing import containers, engine, pool, selfcheck
from crucible import redis_clients

log = logging.getLogger(__name__)

# A queued row younger than this may still be between commit and enqueue: leave it alone.
QUEUED_GRACE_S = 5
LIVE_JOB_STATUSES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def _has_live_job(evaluation: Evaluation) -> bool:
    try:
        job = Job.fetch(services.job_id(evaluation.pk), connection=redis_clients.rq_connection(evaluation.queue_name))
    except Exception:
        return False
    status = job.get_status(refresh=False)
    if status == JobStatus.STARTED:
        # A worker took the job but the row is still queued: fine for the moment between dequeue and
        # claim; after that the job is stale (its worker died before claiming, or the run was handed
        # back by a worker whose job is ending). The claim is atomic, so a spare job is harmless.
        started = job.started_at
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return started is not None and timezone.now() - started < timedelta(seconds=QUEUED_GRACE_S)
    return status in LIVE_JOB_STATUSES


def requeue_lost_jobs() -> list[str]:
    if not engine.ping():
        # Work enqueued now would only be deferred by the workers: wait for the engine to answer.
        log.warning("reconciler: the Docker engine does not answer; queued evaluations wait")
        return []
    cutoff = timezone.now() - timedelta(seconds=QUEUED_GRACE_S)
    requeued = []
    waiting = Evaluation.objects.filter(status=Status.QUEUED, held=False, awaiting_runtime=False, created_at__lt=cutoff)
    for evaluation in waiting.only("id", "priority", "timeout_s"):
        if not _has_live_job(evaluation):
            services.enqueue(evaluation.pk, evaluation.queue_name)
            requeued.append(str(evaluation.pk))
            audit.record("reconciler.requeue", target=evaluation.pk)
    return requeued


def release_held() -> list[str]:
    """Held batch samples a lost release left behind go onto the queues (``dispatch.release_all``)."""
    if killswitch.is_engaged() or not engine.ping():
        return []
    return dispatch.release_all()


def end_lost_runs() -> list[str]:
    """Runs whose worker stopped heart-beating: retried once (enqueued at once), else ``error``."""
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S)
    decided = []
    for evaluation in Evaluation.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff):
        stale_for = (timezone.now() - evaluation.heartbeat_at).total_seconds()
        _remove_lost_run_containers(evaluation)
        _remove_kept_of_lost_worker(evaluation.worker)
        decision = retries.retry_or_fail(evaluation, Reason.WORKER_LOST, "worker_lost", by="reconciler")
        if decision is None:
            continue
        decided.append(str(evaluation.pk))
        audit.record(
            "reconciler.worker_lost",
            target=evaluation.pk,
            decision=decision,
            heartbeat_age_s=round(stale_for, 1),
            attempts=evaluation.attempts,
        )
        if decision == RetryDecision.REQUEUED and engine.ping():
            services.enqueue(evaluation.pk, evaluation.queue_name)  # else requeue_lost_jobs, once it answers
    return decided


def remove_containers_of(evaluation: Evaluation) -> list[str]:
    """Remove this installation's containers of ``evaluation`` (a lost or earlier attempt's); raises if the
    engine does not answer."""
    removed = []
    for container_id, run_id in containers.list_instance_containers():
        if run_id == str(evaluation.pk):
            containers.remove(container_id)
            removed.append(container_id)
    return removed


def _remove_lost_run_containers(evaluation: Evaluation) -> None:
    try:
        for container_id in remove_containers_of(evaluation):
            audit.record("reconciler.remove_container", target=str(evaluation.pk), container=container_id[:12])
    except Exception:
        # The engine is away; the container goes with a later pass (remove_orphan_containers).
        log.warning("could not remove the container of lost run %s", evaluation.pk, exc_info=True)


def _remove_kept_of_lost_worker(worker: str) -> None:
    """The sandboxes ``worker`` kept for its batches (``pool.kept``): its run was lost, and unless it has
    another live run (which may be using one) it is taken for gone."""
    if not worker or _has_live_run(worker):
        return
    try:
        for container_id in pool.remove_kept(worker):
            audit.record("reconciler.remove_pool_container", target=worker, container=container_id[:12])
    except Exception:
        log.warning("could not remove the kept sandboxes of lost worker %s", worker, exc_info=True)


def remove_orphan_containers() -> list[str]:
    """Remove containers with no running evaluation; one the engine cannot remove does not stop the rest.

    A queued evaluation never claimed keeps its container: a worker starts a cold run's sandbox
    while it claims the row (``runner.Ahead``), a few milliseconds before the row says ``running``.
    A requeued one (claimed before) does not: what its lost attempt left goes."""
    removed = []
    about_to_run = Q(status=Status.QUEUED, attempts=0)
    for container_id, run_id in containers.list_instance_containers():
        # Only evaluation containers: the sandbox self-check's canaries clean up after themselves
        # (those an engine that went away left: ``remove_left_canaries``, once they are old).
        if (
            _is_uuid(run_id)
            and not Evaluation.objects.filter(Q(status=Status.RUNNING) | about_to_run, pk=run_id).exists()
        ):
            if containers.removed(container_id, "orphan container"):
                removed.append(container_id)
                audit.record("reconciler.remove_container", target=run_id, container=container_id[:12])
    return removed


def remove_left_canaries() -> list[str]:
    """Remove the sandbox self-check's canaries an engine that went away under them left behind."""
    removed = []
    for container_id in selfcheck.left_canaries():
        if containers.removed(container_id, "left canary container"):
            removed.append(container_id)
            audit.record("reconciler.remove_canary", target="selfcheck", container=container_id[:12])
    return removed


def remove_dead_workers_pools() -> list[str]:
    """Remove the warm-pool sandboxes of workers that are gone (idle, or claimed by a run it lost).

    A worker counts as gone when Redis does not list it, which is also what a flushed Redis says of
    a worker that still runs: a sandbox claimed by a run that is still running is left to that run
    (if its worker is in fact gone, ``end_lost_runs`` removes the run's containers); so are the
    sandboxes it keeps for its batches while it has a live run (which may be using one)."""
    alive = {worker.name for worker in Worker.all(connection=redis_clients.rq_connection())}
    removed = []
    for owner in pool.pool_owners() - alive:
        for container_id in pool.remove_pools_of(owner, spare=_still_running, busy=_has_live_run(owner)):
            removed.append(container_id)
            audit.record("reconciler.remove_pool_container", target=owner, container=container_id[:12])
    return removed


def _still_running(run_id: str) -> bool:
    return _is_uuid(run_id) and Evaluation.objects.filter(pk=run_id, status=Status.RUNNING).exists()


def _has_live_run(worker: str) -> bool:
    """``worker`` runs an evaluation whose heartbeat is fresh (its run is not lost)."""
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S)
    return Evaluation.objects.filter(status=Status.RUNNING, worker=worker, heartbeat_at__gte=cutoff).exists()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError):
        return False
    return True


def reconcile() -> dict:
    """One pass. Each part runs even when another fails (e.g. the engine is down: rows still repaired)."""
    result = {}
    for key, step in (
        ("worker_lost", end_lost_runs),
        ("requeued", requeue_lost_jobs),
        ("released", release_held),
        ("orphans_removed", remove_orphan_containers),
        ("canaries_removed", remove_left_canaries),
        ("pools_removed", remove_dead_workers_pools),
        ("callbacks", callback_events.sweep),
        ("builds", builds.reconcile),
    ):
        try:
            result[key] = step()
        except Exception as exc:
            log.warning("reconciler: %s failed: %s", key, exc, exc_info=True)
            result[key] = []
            result.setdefault("failed", []).append(key)
    if any(result.values()):
        log.info("reconciler: %s", result)
    return result
