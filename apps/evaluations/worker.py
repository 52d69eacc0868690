"""The RQ worker class Crucible's workers run (``manage.py crucible_worker`` uses it), and the
``shutdown`` flag through which a stopping worker tells its work horse to hand the run back."""

from __future__ import annotations

import logging
import os
import signal
import threading

from django.conf import settings
from rq import Worker

from apps.sandboxing import selfcheck
from apps.sandboxing.policy import Limits, Profile
from apps.sandboxing.pool import WarmPool

log = logging.getLogger(__name__)

HAND_BACK_SIGNAL = signal.SIGUSR1

# Set in a work horse when its worker is shutting down: the run is then stopped at once and handed
# back (apps.evaluations.running, apps.evaluations.retries).
shutdown = threading.Event()


def request_shutdown(*_args) -> None:
    shutdown.set()


def warm_profiles() -> list[Profile]:
    """The profiles a worker keeps warm: the default limits on the default image (the runtimes of
    ``python`` and ``bash`` share it). Runs with other limits start cold."""
    return [Profile(image=settings.SANDBOX_IMAGE, limits=Limits.from_settings())]


class CrucibleWorker(Worker):
    """Checks the sandbox policy in the parent process before each job.

    RQ forks a work horse per job, so a check cached inside a job would be lost with the horse.
    Here the canary runs at most once per cache period, in the parent, and every forked horse
    inherits the verdict; ``running`` still calls ``require_policy()`` and fails closed.
    """

    pool: WarmPool | None = None

    # --- Warm pool --------------------------------------------------------------------------
    # Started once the worker is registered (so the reconciler, which removes the pools of workers
    # that are gone, never sees this one's pool before the worker itself), drained when it stops.

    def register_birth(self):
        super().register_birth()
        self.pool = WarmPool(self.name, settings.SANDBOX_POOL_SIZE, warm_profiles)
        self.pool.start()

    def register_death(self):
        if self.pool is not None:
            drained = self.pool.drain()
            log.info("worker %s: warm pool drained (%d idle sandboxes removed)", self.name, len(drained))
        super().register_death()

    def execute_job(self, job, queue):
        try:
            problems = selfcheck.self_check()
        except Exception:
            log.exception("sandbox self-check could not run; jobs will end in error until it can")
        else:
            if problems:
                log.error("sandbox policy NOT enforced by this engine, refusing work: %s", "; ".join(problems))
        return super().execute_job(job, queue)

    # --- Graceful shutdown ------------------------------------------------------------------
    # RQ's warm shutdown waits for the running job, up to its timeout (minutes), and a process
    # manager (honcho: 5 s) kills the worker long before: the horse, in its own process group,
    # would go on alone. Instead the horse is told to stop its run at once and hand it back
    # (requeued once, or error "worker_shutdown"; see apps.evaluations.retries), so the
    # worker exits within a second or two and no run or container is left behind.

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.horse_pid:
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
