"""The RQ worker class Crucible's workers run (``manage.py crucible_worker`` uses it), and the
``shutdown`` flag through which a stopping worker tells the run in progress (in its own process, or
in a forked work horse with ``WORKER_FORK=true``) to hand the run back."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading

from django.conf import settings
from django.db import connections
from rq import Worker, worker_registration
from rq.worker import WorkerStatus

from apps.sandboxing import catalog, removal, selfcheck
from apps.sandboxing.enginereport import EngineWatch
from apps.sandboxing.policy import Limits, Profile
from apps.sandboxing.pool import WarmPool

log = logging.getLogger(__name__)

# The field of RQ's worker hash that holds what the worker last saw of its engine (apps.evaluations.fleet).
ENGINE_FIELD = "crucible_engine"

HAND_BACK_SIGNAL = signal.SIGUSR1

# Set where the run is (the worker's process, or its work horse) when the worker is shutting down:
# the run is then stopped at once and handed back (apps.evaluations.running, apps.evaluations.retries).
shutdown = threading.Event()


def request_shutdown(*_args) -> None:
    shutdown.set()


def drop_broken_connections() -> None:
    """Close this thread's database connections that errored and no longer answer (a restarted PostgreSQL).

    Unlike Django's ``close_old_connections`` this keeps a healthy connection whatever
    ``CONN_MAX_AGE`` says: a worker that runs jobs in its own process reuses it, which is the point.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred and not conn.is_usable():
            conn.close()


def warm_profiles() -> list[Profile]:
    """The profiles a worker keeps warm: the default limits on the default image (the runtimes of
    ``python`` and ``bash`` share it), and on the image of each runtime ``SANDBOX_POOL_RUNTIMES``
    names (unknown names are skipped). Runs with other limits start cold."""
    limits = Limits.from_settings()
    profiles = [Profile(image=settings.SANDBOX_IMAGE, limits=limits)]
    known = catalog.definitions()
    for name in settings.SANDBOX_POOL_RUNTIMES:
        definition = known.get(name)
        if definition is not None and definition.own_image:
            sandbox_limits = definition.to_runtime().sandbox_limits(limits)
            profiles.append(Profile(image=definition.image, limits=sandbox_limits, build_dir=definition.compiled))
    return profiles


class CrucibleWorker(Worker):
    """Checks the sandbox policy in the parent process before each job.

    RQ forks a work horse per job, so a check cached inside a job would be lost with the horse.
    Here the canary runs at most once per cache period, in the parent (in a thread that runs it at
    the worker's start and before each verdict expires, so no job waits for it), and every forked
    horse inherits the verdict; ``running`` still calls ``require_policy()`` and fails closed.
    With ``WORKER_FORK=false`` jobs run in the worker's own process instead (see below).
    """

    pool: WarmPool | None = None
    engine_watch: EngineWatch | None = None
    policy_refresher: selfcheck.Refresher | None = None
    remover: removal.Remover | None = None

    def __init__(self, *args, **kwargs):
        # A busy worker beats this often (RQ's default, 30 s, is as long as the registration lives).
        kwargs.setdefault("job_monitoring_interval", settings.WORKER_BUSY_BEAT_S)
        super().__init__(*args, **kwargs)
        if kwargs.get("prepare_for_work", True):
            # The host this worker says it runs on (RQ's own guess is the machine's name): workers
            # of one host share its engine, and the dashboard groups them by it.
            self.hostname = settings.WORKER_HOST

    # --- Warm pool and engine report -------------------------------------------------------
    # Started once the worker is registered (so the reconciler, which removes the pools of workers
    # that are gone, never sees this one's pool before the worker itself), drained when it stops.

    def register_birth(self):
        super().register_birth()
        # The canary runs now and before each verdict expires, beside the jobs rather than in one.
        self.policy_refresher = selfcheck.Refresher(name=f"sandbox-selfcheck-{self.name}")
        self.policy_refresher.start()
        self.engine_watch = EngineWatch(settings.ENGINE_REPORT_S)
        self.engine_watch.start()
        self.publish_engine_report()
        self.pool = WarmPool(self.name, settings.SANDBOX_POOL_SIZE, warm_profiles)
        self.pool.start()
        self.start_remover()

    def register_death(self):
        if self.remover is not None:
            removal.install(None)
            removed = self.remover.drain()
            log.info("worker %s: sandbox remover drained (%d sandboxes removed behind runs)", self.name, removed)
        if self.pool is not None:
            drained = self.pool.drain()
            log.info("worker %s: warm pool drained (%d idle sandboxes removed)", self.name, len(drained))
        if self.engine_watch is not None:
            self.engine_watch.stop()
        if self.policy_refresher is not None:
            self.policy_refresher.stop()
        super().register_death()

    def start_remover(self) -> None:
        """Remove finished runs' sandboxes in a thread of this process while the next job runs
        (``removal``); not with a work horse per job (the horse would not have the thread)."""
        if settings.WORKER_FORK or settings.SANDBOX_REMOVE_BEHIND <= 0:
            return
        self.remover = removal.Remover(settings.SANDBOX_REMOVE_BEHIND, name=f"sandbox-remover-{self.name}")
        self.remover.start()
        removal.install(self.remover)

    def publish_engine_report(self, pipeline=None) -> None:
        """Put the engine's latest report beside this worker's heartbeat in Redis (never raises; in
        ``pipeline``, when given, which its caller executes)."""
        report = self.engine_watch.latest if self.engine_watch is not None else None
        if report is None:
            return
        try:
            (pipeline or self.connection).hset(self.key, ENGINE_FIELD, json.dumps(report.as_dict()))
        except Exception:
            log.warning("worker %s: could not publish its engine report", self.name, exc_info=True)

    # --- Registration that survives a Redis restart ------------------------------------------
    # A Redis that restarts empty (or is flushed) forgets every worker: ``rq:workers`` no longer
    # lists them, so the health check, the dashboard and django-rq would say none runs while they
    # all do. Each heartbeat checks that this worker is still listed and, if not, registers it
    # again as at its birth (``serialize`` keeps its birth date). An idle worker beats every
    # ``worker_ttl - 15`` s (``manage.py crucible_worker`` sets ``WORKER_REGISTRATION_TTL_S``).

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        # RQ beats on its own three times a job (before and after the dequeue, after the job): its
        # three commands, the registration check and the engine report go in one round trip.
        with self.connection.pipeline(transaction=False) as batch:
            super().heartbeat(timeout, batch)
            asked = len(batch)
            self._ask_if_forgotten(batch)
            self.publish_engine_report(batch)
            answers = batch.execute()
        listed, whole = answers[asked : asked + 2]
        if not (listed and whole):
            self.register_again()

    def maintain_heartbeats(self, job, execution):
        super().maintain_heartbeats(job, execution)
        self.register_again_if_forgotten()
        self.publish_engine_report()

    def register_again_if_forgotten(self) -> bool:
        """Register this worker again when Redis no longer lists it; True when it had to."""
        try:
            with self.connection.pipeline(transaction=False) as pipeline:
                self._ask_if_forgotten(pipeline)
                listed, whole = pipeline.execute()
        except Exception:
            log.warning("worker %s: could not check its registration", self.name, exc_info=True)
            return False
        if listed and whole:
            return False
        return self.register_again()

    def _ask_if_forgotten(self, pipeline) -> None:
        """Queue the two questions whose answers say Redis still has this worker: listed, and whole."""
        pipeline.sismember(worker_registration.REDIS_WORKER_KEYS, self.key)
        pipeline.hexists(self.key, "birth")

    def register_again(self) -> bool:
        """Register this worker as at its birth (Redis forgot it); True when that was written."""
        try:
            with self.connection.pipeline() as pipeline:
                pipeline.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipeline)
                pipeline.expire(self.key, self.worker_ttl + 60)
                pipeline.execute()
        except Exception:
            log.warning("worker %s: could not register again", self.name, exc_info=True)
            return False
        log.warning("worker %s: Redis had forgotten it (restarted or flushed); registered again", self.name)
        return True

    def execute_job(self, job, queue):
        self._check_sandbox_policy()
        if settings.WORKER_FORK:
            return super().execute_job(job, queue)
        return self._execute_in_process(job, queue)

    def _check_sandbox_policy(self) -> None:
        """The canary's verdict (kept fresh by ``policy_refresher``; run here if it has expired all the
        same); read again by ``running`` before any run starts."""
        try:
            problems = selfcheck.self_check()
        except Exception:
            log.exception("sandbox self-check could not run; jobs will end in error until it can")
        else:
            if problems:
                log.error("sandbox policy NOT enforced by this engine, refusing work: %s", "; ".join(problems))

    # --- Without a work horse (WORKER_FORK=false) ---------------------------------------------
    # What RQ's SimpleWorker does, kept in this class so the policy check and the hand-back stay
    # in one place. It saves the fork and the new PostgreSQL and Redis connections a horse opens
    # per job. What the fork gave is kept this way: the job's timeout still fires (RQ's SIGALRM
    # death penalty, in this process's main thread); an exception in a job is caught by RQ as in
    # a horse; the run's own heartbeat thread runs as it did in the horse, and a thread keeps RQ's
    # heartbeats as the forking parent did; a shutdown hands the run back (below); a job that
    # kills this process (segfault, OOM killer) takes only this worker down: its run's heartbeat
    # goes stale and the reconciler hands it back, and RQ moves the job out of the started
    # registry once the worker's key has expired. What is lost: a job stuck in C code past its RQ
    # timeout is not SIGKILLed by a parent (runs end by their own timeout long before), and a
    # leak in one job stays in the process for the next.

    def _execute_in_process(self, job, queue) -> None:
        """Run ``job`` in this process, on this process's database connection, kept from job to job."""
        execution = self.prepare_execution(job)
        done = threading.Event()
        beats = threading.Thread(target=self._beat_until, args=(done, job, execution), daemon=True)
        drop_broken_connections()
        beats.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beats.join()
            drop_broken_connections()
        self.set_state(WorkerStatus.IDLE)

    def _beat_until(self, done: threading.Event, job, execution) -> None:
        """What a forking worker does while its horse runs: keep the worker's, the job's and the
        execution's keys alive, so a worker killed mid-job leaves the dashboard and health check and
        RQ's registries as soon as a forking one would (never an hour later)."""
        while not done.wait(self.job_monitoring_interval):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:
                log.warning("worker %s: RQ heartbeat not written", self.name, exc_info=True)

    # --- Graceful shutdown ------------------------------------------------------------------
    # RQ's warm shutdown waits for the running job, up to its timeout (minutes), and a process
    # manager (honcho: 5 s) kills the worker long before: the horse, in its own process group,
    # would go on alone. Instead the horse is told to stop its run at once and hand it back
    # (requeued once, or error "worker_shutdown"; see apps.evaluations.retries), so the
    # worker exits within a second or two and no run or container is left behind.

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if not settings.WORKER_FORK:
            # The run is in this process: the signal handler sets the flag it watches.
            if self.get_state() == WorkerStatus.BUSY:
                log.info("worker %s: handing its run back", self.name)
            request_shutdown()
        elif self.horse_pid:
            log.info("worker %s: asking horse %s to hand its run back", self.name, self.horse_pid)
            try:
                os.kill(self.horse_pid, HAND_BACK_SIGNAL)
            except ProcessLookupError:
                pass

    def setup_work_horse_signals(self):
        super().setup_work_horse_signals()
        # SIGTERM to the horse itself (a process manager killing its group) hands back too.
        signal.signal(HAND_BACK_SIGNAL, request_shutdown)
        signal.signal(signal.SIGTERM, request_shutdown)
