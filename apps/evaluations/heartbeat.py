"""The heartbeat of a run: proof to the reconciler that the worker running it is alive.

A thread beside the run (in the worker, or in its work horse with ``WORKER_FORK``) writes
``heartbeat_at`` every ``WORKER_HEARTBEAT_S`` for as long as the run is in progress (sandbox
start, run, artifact collection, recording). The write is fenced by
the attempt: once the row is not this attempt's any more (the reconciler requeued it or ended it
after the heartbeat went stale), ``lost`` is set and the run abandons the row to its new owner.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from apps.evaluations.dbretry import forget_connection
from apps.evaluations.models import Evaluation, Status

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, evaluation_id, attempt: int, interval_s: float | None = None):
        super().__init__(name=f"heartbeat-{evaluation_id}", daemon=True)
        self.evaluation_id = evaluation_id
        self.attempt = attempt
        self.interval_s = interval_s or settings.WORKER_HEARTBEAT_S
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval_s):
                if not self._beat():
                    log.warning(
                        "evaluation %s is not this worker's any more (attempt %d)", self.evaluation_id, self.attempt
                    )
                    self.lost.set()
                    return
        finally:
            forget_connection()

    def _beat(self) -> bool:
        """Write one heartbeat; False once the row belongs to someone else (a database outage is not that)."""
        try:
            updated = Evaluation.objects.filter(
                pk=self.evaluation_id, status=Status.RUNNING, attempts=self.attempt
            ).update(heartbeat_at=timezone.now())
        except DatabaseError as exc:
            log.warning("heartbeat of %s not written: %s", self.evaluation_id, exc)
            forget_connection()
            return True
        return updated == 1

    def stop(self) -> None:
        self._stop_event.set()
