"""What keeps a run correct when the platform under it fails (issue 7).

* ``Heartbeat``: a thread in the work horse that writes ``heartbeat_at`` every ``WORKER_HEARTBEAT_S``
  for as long as the run is in the horse (sandbox start, run, artifact collection, recording), fenced
  by the attempt: once the row is no longer this attempt's (the reconciler requeued it or ended it),
  ``lost`` is set and the run is abandoned.
* ``shutdown``: set in the horse when its worker is asked to stop (SIGTERM/SIGINT to the worker, or
  SIGTERM to the horse). The run is then stopped at once and handed back (see ``retry_or_fail``).
* ``ResilientRecorder``: output chunks survive a PostgreSQL restart: a chunk that cannot be written is
  kept and written again (same ``seq``) once the database answers; a write whose commit reached the
  server but whose answer was lost is recognised by the unique ``seq`` and not written twice.
* ``retry_or_fail``: the one decision for platform faults. An interrupted run is run again from the
  start once (while ``attempts < EVALUATION_MAX_ATTEMPTS``): its output so far is kept, a notice chunk
  on stderr marks where the next attempt starts, and the next attempt continues the ``seq`` numbers,
  so output stays append-only (a live viewer never sees a ``seq`` twice or a gap). Otherwise the row
  ends ``error`` with the reason. A pending cancel/stop wins over a retry. Every decision is logged
  and audited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from apps.audit import services as audit
from apps.evaluations import publisher
from apps.evaluations.models import Control, Evaluation, OutputChunk, Status
from apps.evaluations.recording import OutputRecorder

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
DB_RETRY_PAUSE_S = 0.5

# Set in a work horse when its worker is shutting down (see apps.evaluations.worker).
shutdown = threading.Event()


def request_shutdown(*_args) -> None:
    shutdown.set()


def forget_connection() -> None:
    """Drop this thread's database connection after an error; the next query opens a new one."""
    try:
        connection.close()
    except Exception:  # noqa: S110 (the connection is already broken)
        pass


def with_db_retry(fn: Callable, what: str, budget_s: float | None = None):
    """Call ``fn`` until it gets through a PostgreSQL outage, for at most ``WORKER_DB_RETRY_S``."""
    deadline = time.monotonic() + (settings.WORKER_DB_RETRY_S if budget_s is None else budget_s)
    while True:
        try:
            return fn()
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unavailable while %s (%s); retrying", what, exc)
            forget_connection()
            time.sleep(DB_RETRY_PAUSE_S)


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
                try:
                    updated = Evaluation.objects.filter(
                        pk=self.evaluation_id, status=Status.RUNNING, attempts=self.attempt
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    log.warning("heartbeat of %s not written: %s", self.evaluation_id, exc)
                    forget_connection()
                    continue
                if updated == 0:
                    log.warning(
                        "evaluation %s is no longer this worker's (attempt %d)", self.evaluation_id, self.attempt
                    )
                    self.lost.set()
                    return
        finally:
            forget_connection()

    def stop(self) -> None:
        self._stop_event.set()


class Superseded(Exception):
    """The row was handed to another attempt: this worker must stop writing to it."""


class ResilientRecorder(OutputRecorder):
    """An OutputRecorder whose writes wait out a database outage instead of losing output."""

    def __init__(self, evaluation_id, start_seq: int = 0):
        super().__init__(evaluation_id, start_seq=start_seq)
        self.superseded = False
        self._retry_at = 0.0

    def write(self, stream: str, data: bytes) -> None:
        if self.superseded:
            return
        super().write(stream, data)

    def flush_if_due(self) -> None:
        if time.monotonic() >= self._retry_at:
            super().flush_if_due()

    def flush(self) -> None:
        if not self._pending or self.superseded:
            return
        if time.monotonic() < self._retry_at:
            return
        try:
            self._write_pending()
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("output of %s kept in memory, database unavailable: %s", self.evaluation_id, exc)
            forget_connection()
            self._retry_at = time.monotonic() + DB_RETRY_PAUSE_S

    def flush_all(self) -> None:
        """At the end of the run: everything pending must reach the database (or the budget runs out)."""
        self._retry_at = 0.0

        def attempt():
            self._retry_at = 0.0
            if self._pending and not self.superseded:
                self._write_pending()

        with_db_retry(attempt, f"storing the output of {self.evaluation_id}")

    def _write_pending(self) -> None:
        data = b"".join(self._pending)
        seq = self.seq + 1
        try:
            with transaction.atomic():
                chunk = OutputChunk.objects.create(
                    evaluation_id=self.evaluation_id, seq=seq, stream=self._stream, data=data
                )
        except IntegrityError:
            existing = OutputChunk.objects.filter(evaluation_id=self.evaluation_id, seq=seq).first()
            if existing is None or bytes(existing.data) != data:
                self.superseded = True
                log.warning("evaluation %s: seq %d written by another attempt; output dropped", self.evaluation_id, seq)
                return
            chunk = existing  # our earlier write did commit; its answer was lost with the connection
        self.seq = seq
        self._pending, self._pending_bytes = [], 0
        self._retry_at = 0.0
        publisher.publish_log(self.evaluation_id, chunk.seq, chunk.stream, chunk.text)


# Runner errors that mean the engine failed under the run (restart, lost connection), as opposed to a
# deterministic refusal (image missing, policy refused, launcher failed) that a retry would repeat.
TRANSIENT_ENGINE_ERRORS = (
    "runner failure",
    "sandbox protocol error",
    "cannot create the sandbox container",
    "the engine could not start the sandbox container",
)


def is_transient_engine_error(error: str) -> bool:
    return (error or "").startswith(TRANSIENT_ENGINE_ERRORS)


def next_seq(evaluation_id) -> int:
    return (OutputChunk.objects.filter(evaluation_id=evaluation_id).aggregate(m=Max("seq"))["m"] or 0) + 1


CONTROL_STATUS = {
    Control.CANCEL: Status.CANCELLED,
    Control.STOP: Status.STOPPED,
    Control.SAFETY_STOP: Status.SAFETY_STOPPED,
}


def retry_or_fail(evaluation: Evaluation, reason: str, *, by: str, attempt: int | None = None) -> str:
    """A platform fault interrupted ``evaluation`` (running): run it again once, or end it ``error``.

    Returns "requeued", "ended" (error, or the cancel/stop that was pending) or "" (the row was no
    longer this attempt's: someone else decided). ``by`` names the decider (reconciler, worker).
    """
    attempt = evaluation.attempts if attempt is None else attempt
    evaluation.refresh_from_db()
    if evaluation.status != Status.RUNNING or evaluation.attempts != attempt:
        return ""
    worker = evaluation.worker
    if evaluation.control:
        # The user asked to cancel or stop it: that is what happens, not a retry.
        status = CONTROL_STATUS[Control(evaluation.control)]
        if evaluation.finish(status, attempt=attempt, error=f"{reason} (while a {evaluation.control} was pending)"):
            _decided(evaluation, "ended", reason, by, attempt, worker)
            return "ended"
        return ""
    if attempt < settings.EVALUATION_MAX_ATTEMPTS:
        notice = (
            f"\n[crucible] {reason}: this evaluation is run again from the start "
            f"(attempt {attempt + 1} of {settings.EVALUATION_MAX_ATTEMPTS}); the output above is "
            "from the interrupted attempt.\n"
        ).encode()
        try:
            with transaction.atomic():
                seq = next_seq(evaluation.pk)
                chunk = OutputChunk.objects.create(evaluation=evaluation, seq=seq, stream="stderr", data=notice)
                if not evaluation.requeue(attempt=attempt):
                    raise _NotRequeued
        except (_NotRequeued, IntegrityError):
            evaluation.refresh_from_db()
            if evaluation.status == Status.RUNNING and evaluation.attempts == attempt and evaluation.control:
                return retry_or_fail(evaluation, reason, by=by, attempt=attempt)
            return ""
        publisher.publish_log(evaluation.pk, chunk.seq, chunk.stream, chunk.text)
        publisher.publish_status(evaluation)
        _decided(evaluation, "requeued", reason, by, attempt, worker)
        return "requeued"
    if evaluation.fail_with_error(reason, from_statuses=[Status.RUNNING], attempt=attempt):
        _decided(evaluation, "ended", reason, by, attempt, worker)
        return "ended"
    return ""


class _NotRequeued(Exception):
    pass


def _decided(evaluation: Evaluation, decision: str, reason: str, by: str, attempt: int, worker: str) -> None:
    log.warning(
        "evaluation %s: %s after attempt %d (%s) -> %s, decided by %s",
        evaluation.pk,
        reason,
        attempt,
        decision,
        evaluation.status,
        by,
    )
    audit.record(
        f"evaluation.{'retry' if decision == 'requeued' else 'platform_fault'}",
        target=evaluation.pk,
        reason=reason,
        attempt=attempt,
        decided_by=by,
        status=evaluation.status,
        worker=worker,
    )
    if decision == "ended":
        publisher.publish_end(evaluation)
