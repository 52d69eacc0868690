"""What the runner asks, about every 0.1 s, while a program runs: carry on, cancel or stop?

The answer comes from the row (a user's cancel or stop, an operator's stop, a safety rule) and from
the worker itself: the run is stopped when it must be abandoned, because the worker is shutting
down or the row is not this attempt's any more. A database outage does not stop the run: the last
known request stands until the row can be read again.

Every ``CONTROL_POLL_S`` it looks for the evaluation's hint in Redis (``control_hints``: a request
was made) and reads the row when there is one, or when Redis cannot say, and at least every
``ROW_READ_EVERY_S`` whatever the hints say: a request is seen within ``CONTROL_POLL_S``, and a
row handed to another attempt within ``ROW_READ_EVERY_S`` (or the heartbeat's next write).
"""

from __future__ import annotations

import time
from enum import StrEnum

from apps.evaluations import control_hints, worker
from apps.evaluations.dbretry import TRANSIENT_DB_ERRORS, forget_connection
from apps.evaluations.heartbeat import Heartbeat
from apps.evaluations.models import Control, Evaluation, Status
from apps.evaluations.recording import OutputRecorder
from apps.monitoring.safety import SafetyMonitor
from apps.sandboxing.outcomes import Command

# How often the runner's calls look for a request: the evaluation's hint in Redis (``control_hints``),
# and its row when a hint came (or Redis cannot say). The row is read at least every ROW_READ_EVERY_S.
CONTROL_POLL_S = 0.2
ROW_READ_EVERY_S = 2.0

# Evaluations tells a safety stop from an emergency stop itself; both keep the sandbox's evidence
# (frozen, /output collected, then killed). A worker's shutdown stops with a plain SIGKILL.
COMMAND_FOR_CONTROL = {
    Control.CANCEL: Command.CANCEL,
    Control.STOP: Command.STOP_KEEPING_EVIDENCE,
    Control.SAFETY_STOP: Command.STOP_KEEPING_EVIDENCE,
}


class Abandon(StrEnum):
    """Why a run is given up by this worker, whatever the user asked."""

    SUPERSEDED = "superseded"  # the row was handed to another attempt
    SHUTDOWN = "shutdown"  # the worker is stopping: the run is handed back


class Controller:
    def __init__(
        self,
        evaluation: Evaluation,
        recorder: OutputRecorder,
        monitor: SafetyMonitor | None = None,
        heartbeat: Heartbeat | None = None,
        *,
        read_at: float | None = None,
    ):
        """``read_at``: when (monotonic) ``evaluation`` was read as it is, e.g. by its claim, which
        wrote the row running for this attempt. With no control request on it, the first look waits
        its turn from there (every request is still seen within ``CONTROL_POLL_S`` of being made): a
        batch sample that ends within that time asks nothing at all (it read the row once per sample
        before). A row handed back carrying a request is read at the first call."""
        self.evaluation = evaluation
        self.recorder = recorder
        self.monitor = monitor
        self.heartbeat = heartbeat
        self.first_call_at: float | None = None  # when the sandbox was ready (the runner's first poll)
        self.superseded = False
        self.requested: Control | None = None
        if evaluation.control:
            read_at = None
        self._next_look = 0.0 if read_at is None else read_at + CONTROL_POLL_S
        self._next_row_read = 0.0 if read_at is None else read_at + ROW_READ_EVERY_S
        self._hints_seen = 0

    def __call__(self) -> Command | None:
        self.recorder.flush_if_due()
        now = time.monotonic()
        if self.first_call_at is None:
            self.first_call_at = now
        if now >= self._next_look:
            self._next_look = now + CONTROL_POLL_S
            if now >= self._next_row_read or self._hinted():
                self._next_row_read = now + ROW_READ_EVERY_S
                self._poll_row()
        self.take_safety_stop()
        if self.abandon_reason() is not None:
            return Command.STOP
        return COMMAND_FOR_CONTROL[self.requested] if self.requested else None

    def take_safety_stop(self) -> Control | None:
        """A "stop" rule fired: services.stop put it on the row too; answer now, not at the next poll.
        Also asked once more when the run has ended, which may be before the runner's next call."""
        if self.monitor is not None and self.monitor.stop_requested and self.requested in (None, Control.CANCEL):
            self.requested = Control.SAFETY_STOP
        return self.requested

    def _hinted(self) -> bool:
        """A request was announced since the last look, or Redis cannot say: read the row."""
        announced = control_hints.count(self.evaluation.pk)
        if announced is None:
            return True
        hinted, self._hints_seen = announced != self._hints_seen, announced
        return hinted

    def _poll_row(self) -> None:
        try:
            row = Evaluation.objects.filter(pk=self.evaluation.pk).values_list("control", "status", "attempts").first()
        except TRANSIENT_DB_ERRORS:
            forget_connection()
            return
        if row is None or row[1] != Status.RUNNING or row[2] != self.evaluation.attempts:
            self.superseded = True
            return
        self.requested = Control(row[0]) if row[0] else None

    def abandon_reason(self) -> Abandon | None:
        heartbeat_lost = self.heartbeat is not None and self.heartbeat.lost.is_set()
        if self.superseded or self.recorder.superseded or heartbeat_lost:
            return Abandon.SUPERSEDED
        if worker.shutdown.is_set():
            return Abandon.SHUTDOWN
        return None
