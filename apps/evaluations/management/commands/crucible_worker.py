"""``manage.py crucible_worker``: an RQ worker set up the one way Crucible's workers run.

The queues (``settings.RQ_QUEUES``, most urgent first), the worker class that checks the sandbox
policy before each job and runs jobs in its own process unless ``WORKER_FORK`` (``CrucibleWorker``)
and RQ's scheduler are the defaults, so the Procfile,
the benchmarks, the test stacks and an operator on another host all start the same worker.
Every option of django-rq's ``rqworker`` still applies.
"""

import os

from django.conf import settings
from django_rq.management.commands.rqworker import Command as RQWorkerCommand

WORKER_CLASS = "apps.evaluations.worker.CrucibleWorker"


class Command(RQWorkerCommand):
    help = "Run a Crucible worker (every queue of RQ_QUEUES, most urgent first; CrucibleWorker; with the RQ scheduler)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        # An idle worker beats every worker_ttl - 15 s; each beat re-registers a worker Redis forgot.
        parser.set_defaults(
            worker_class=WORKER_CLASS, with_scheduler=True, worker_ttl=settings.WORKER_REGISTRATION_TTL_S
        )
        parser.add_argument(
            "--without-scheduler", action="store_false", dest="with_scheduler", help="do not run RQ's scheduler"
        )

    def handle(self, *args, **options):
        # Its threads, and the work horses it forks, inherit it. Set, not added (``os.nice`` adds): a
        # second start in one process (tests call the command in theirs) does not lower it further.
        if settings.WORKER_NICE > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, settings.WORKER_NICE)
        return super().handle(*(args or list(settings.RQ_QUEUES)), **options)
