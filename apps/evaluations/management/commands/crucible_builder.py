"""``manage.py crucible_builder``: the process that builds runtime images in the background.

An RQ worker of the ``builds`` queue alone (``apps.evaluations.builds``), so a build of several
minutes never takes one of the run workers. It needs what ``build_sandbox_image`` needs: root,
``debootstrap``, the machine's Debian mirror and the Docker engine the workers use. Run one per
engine (the Procfile's ``builder``); a second one is harmless: a build is claimed by one builder
only. At start it requests the builds of ``RUNTIME_BUILD_AT_START`` whose images are missing.
"""

import os
import socket

from django.conf import settings
from django.core.management.base import BaseCommand
from rq import SimpleWorker

from apps.evaluations import builds
from apps.evaluations.models import Runtime
from apps.sandboxing import catalog, image


class Command(BaseCommand):
    help = "Build runtime images in the background (an RQ worker of the builds queue alone)."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="", help="the worker's name (default: builder-HOST-PID)")
        parser.add_argument("--burst", action="store_true", help="build what is queued, then exit")

    def handle(self, *args, name="", burst=False, **options):
        for runtime_name in self.request_at_start(settings.RUNTIME_BUILD_AT_START):
            self.stdout.write(f"runtime {runtime_name}: image missing, build requested")
        queue = builds.queue()
        name = name or f"builder-{socket.gethostname()}-{os.getpid()}"
        # Not forking: a build is one long job, and its heartbeat thread writes from this process.
        worker = SimpleWorker(
            [queue], connection=queue.connection, name=name, worker_ttl=settings.WORKER_REGISTRATION_TTL_S
        )
        worker.work(burst=burst, with_scheduler=False)

    @staticmethod
    def request_at_start(names: list[str]) -> list[str]:
        """Request the builds of the runtimes ``names`` says ("prebuilt", "all", or names) whose image
        is missing on the engine; returns the names requested."""
        if "all" in names:
            wanted = set(catalog.definitions())
        else:
            wanted = {n for n in names if n != "prebuilt"} | (set(catalog.prebuilt()) if "prebuilt" in names else set())
        requested = []
        for runtime in Runtime.objects.filter(name__in=wanted, enabled=True):
            definition = builds.definition_for(runtime)
            if definition is not None and image.find_image(definition.image) is None:
                builds.request(runtime, by="builder start")
                requested.append(runtime.name)
        return requested
