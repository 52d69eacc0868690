"""Store a run's output as ordered chunks and publish each one live, through a database outage.

Output arrives in many small pieces; storing each as a row would cost a write per line. The
recorder coalesces consecutive pieces of the same stream for up to ``FLUSH_INTERVAL_S`` or
``FLUSH_BYTES`` and flushes earlier when the stream changes, so order is kept exactly.

A chunk is published only after its row is committed, so a live viewer never sees a ``seq`` that
a reconnect could not replay. Output survives a PostgreSQL restart: a chunk that cannot be written
is kept and written again (same ``seq``) once the database answers; a write whose commit reached
the server but whose answer was lost is recognised by the unique ``seq`` and not written twice.
A ``seq`` already holding other data means another attempt owns the row now: the recorder is then
``superseded`` and drops everything after.
"""

from __future__ import annotations

import logging
import time

from django.db import IntegrityError, transaction

from apps.evaluations import publisher
from apps.evaluations.dbretry import DB_RETRY_PAUSE_S, TRANSIENT_DB_ERRORS, forget_connection, with_db_retry
from apps.evaluations.models import OutputChunk

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
FLUSH_BYTES = 64 * 1024


class OutputRecorder:
    def __init__(self, evaluation_id, start_seq: int = 0):
        self.evaluation_id = evaluation_id
        self.seq = start_seq
        self.total_bytes = 0
        self.superseded = False
        self._stream: str | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._first_pending_at = 0.0
        self._retry_at = 0.0  # after a failed write: no new attempt before this (monotonic)

    def write(self, stream: str, data: bytes) -> None:
        if not data or self.superseded:
            return
        if self._stream is not None and stream != self._stream:
            self.flush()
        if not self._pending:
            self._first_pending_at = time.monotonic()
        self._stream = stream
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.total_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._first_pending_at >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Store what is pending as one chunk; while the database is away, keep it and try later."""
        if not self._pending or self.superseded or time.monotonic() < self._retry_at:
            return
        try:
            self._write_pending()
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("output of %s kept in memory, database unavailable: %s", self.evaluation_id, exc)
            forget_connection()
            self._retry_at = time.monotonic() + DB_RETRY_PAUSE_S

    def flush_all(self) -> None:
        """At the end of the run: everything pending must reach the database (or the retry budget runs out)."""

        def attempt() -> None:
            self._retry_at = 0.0
            if self._pending and not self.superseded:
                self._write_pending()

        with_db_retry(attempt, f"storing the output of {self.evaluation_id}")

    def _write_pending(self) -> None:
        data = b"".join(self._pending)
        chunk = self._store(self.seq + 1, data)
        if chunk is None:
            self.superseded = True
            log.warning(
                "evaluation %s: seq %d written by another attempt; output dropped", self.evaluation_id, self.seq + 1
            )
            return
        self.seq = chunk.seq
        self._pending, self._pending_bytes = [], 0
        self._retry_at = 0.0
        publisher.publish_log(self.evaluation_id, chunk.seq, chunk.stream, chunk.text)

    def _store(self, seq: int, data: bytes) -> OutputChunk | None:
        """The stored chunk ``seq`` with ``data`` (ours, maybe from a write whose answer was lost), or None."""
        try:
            with transaction.atomic():
                return OutputChunk.objects.create(
                    evaluation_id=self.evaluation_id, seq=seq, stream=self._stream, data=data
                )
        except IntegrityError:
            existing = OutputChunk.objects.filter(evaluation_id=self.evaluation_id, seq=seq).first()
            return existing if existing is not None and bytes(existing.data) == data else None
