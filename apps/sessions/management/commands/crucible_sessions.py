"""``manage.py crucible_sessions``: a session host, serving agent sessions until SIGTERM/SIGINT.

Run one per machine that has a Docker engine (the Procfile's ``sessions``). On stop it ends the
sessions it holds (their agents end with it) and removes their sandboxes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from django.core.management.base import BaseCommand

from apps.sessions.host import SessionHost

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a session host: starts sessions' sandboxes and serves their execs and files."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="", help="this host's name (default: hostname-pid)")

    def handle(self, *args, **options):
        name = options["name"] or f"{socket.gethostname()}-{os.getpid()}"
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        host = SessionHost(name).start()
        self.stdout.write(f"session host {name}: serving")
        self.stdout.flush()
        stop.wait()
        host.stop()
