"""Recurring maintenance: the reconcilers (apps/evaluations/reconciler.py, apps/sessions/reconciler.py)
and the retention policy (apps/console/retention.py, every RETENTION_EVERY_S when RETENTION_DAYS is set).

``python -m crucible.cron`` (the Procfile's ``cron``) reconciles once at start-up and then every
``RECONCILE_INTERVAL_S``, in this process. It does not go through Redis, so it keeps repairing while
Redis, PostgreSQL or the Docker engine restart (a pass that fails is logged and the next one retries),
and it exits cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger("crucible.cron")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import close_old_connections, connections

    from apps.console import retention
    from apps.evaluations import reconciler
    from apps.sessions import reconciler as session_reconciler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info(
        "reconciler: every %s s (workers lost after %s s)", settings.RECONCILE_INTERVAL_S, settings.WORKER_LOST_AFTER_S
    )
    next_prune = 0.0
    while not stop.is_set():
        close_old_connections()
        try:
            reconciler.reconcile()
            session_reconciler.reconcile()
            if time.monotonic() >= next_prune:
                pruned = retention.prune()
                # A pass that hit its batch size leaves more: the next pass prunes again.
                more = any(n >= settings.RETENTION_BATCH for n in pruned.values())
                next_prune = time.monotonic() + (0 if more else settings.RETENTION_EVERY_S)
        except Exception:
            log.exception("reconciler pass failed; retrying in %s s", settings.RECONCILE_INTERVAL_S)
            connections.close_all()
        stop.wait(settings.RECONCILE_INTERVAL_S)
    connections.close_all()
    log.info("reconciler: stopped")


if __name__ == "__main__":
    main()
