"""The RQ worker class Crucible's workers run (``rqworker --worker-class apps.evaluations.worker.CrucibleWorker``)."""

from __future__ import annotations

import logging

from rq import Worker

from apps.sandboxing import selfcheck

log = logging.getLogger(__name__)


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
