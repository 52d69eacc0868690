"""The RQ worker class Crucible's workers run (``manage.py crucible_worker`` uses it), and the
``shutdown`` flag through which a stopping worker tells its work horse to hand the run back."""

from __future__ import annotations

import logging
import os
import signal
import threading

from rq import Worker

from apps.sandboxing import selfcheck

log = logging.getLogger(__name__)

HAND_BACK_SIGNAL = signal.SIGUSR1

# Set in a work horse when its worker is shutting down: the run is then stopped at once and handed
# back (apps.evaluations.running, apps.evaluations.retries).
shutdown = threading.Event()


def request_shutdown(*_args) -> None:
    shutdown.set()


class CrucibleWorker(Worker):
    """Checks the sandbox policy in the parent process before each job.

    RQ forks a work horse per job, so a check cached inside a job would be lost with the horse.
    Here the canary runs at most once per cache period, in the parent, and every forked horse
    inherits the verdict; ``running`` still calls ``require_policy()`` and fails closed.
    """

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
