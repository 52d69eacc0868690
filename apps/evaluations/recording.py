"""Publish a run's output live, piece by piece, and store it as ordered chunks in batches.

Each piece of output the worker receives becomes one chunk with the next ``seq`` and is published
to the channel layer at once: a viewer sees a line without waiting for a database write. The
chunks are stored in batches (one multi-row INSERT every ``FLUSH_INTERVAL_S``, ``FLUSH_BYTES`` or
``FLUSH_CHUNKS``; the last ones in the transaction that records the run's end, whose publication
says how far the output is stored), and after each stored batch the recorder publishes
how far the output is stored, so a viewer holding live chunks it cannot place yet (it connected
while some chunks were published but not yet stored) reads the missing ones from the database
then. That is the consumer's half of the no-gap/no-duplicate guarantee (see consumers.py).

The flood of small writes is self-limiting: the engine frames what the program wrote since our
last read, so the slower we read (a publish per piece), the bigger the pieces.

Output survives a PostgreSQL restart: chunks that cannot be stored are kept and stored again
(same ``seq``) once the database answers; a write whose commit reached the server but whose answer
was lost is recognised by the unique ``seq`` and not stored twice. A ``seq`` already holding other
data means another attempt owns the row now: the recorder is then ``superseded`` and drops
everything after.

The price of publishing first: a worker that dies (SIGKILL, lost machine) loses the chunks it had
published but not stored yet (one batch; more if PostgreSQL was away). A viewer who saw them live
keeps them, while the retried attempt numbers its output on from the last *stored* seq, so that
viewer drops the first chunks of the retry as already seen. Reserving seqs in the database ahead
of publishing, and starting a retry after the reservation, would close this; it is not done yet.
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
FLUSH_CHUNKS = 500


class OutputRecorder:
    def __init__(self, evaluation_id, start_seq: int = 0):
        self.evaluation_id = evaluation_id
        self.seq = start_seq  # the last seq handed out (published); all stored after flush_all
        self.stored_seq = start_seq  # the last seq known to be stored
        self.total_bytes = 0
        self.superseded = False
        self._unstored: list[OutputChunk] = []
        self._unstored_bytes = 0
        self._first_unstored_at = 0.0
        self._retry_at = 0.0  # after a failed write: no new attempt before this (monotonic)

    def write(self, stream: str, data: bytes, *, ending: bool = False) -> None:
        """Make ``data`` the next chunk, publish it now, and store it with the next batch. ``ending``:
        written as the run ends (its verdict lines): stored with the end's commit, which follows,
        not in a batch of its own however long ago the last was (unless the batch is full)."""
        if not data or self.superseded:
            return
        self.seq += 1
        chunk = OutputChunk(evaluation_id=self.evaluation_id, seq=self.seq, stream=stream, data=data)
        if not self._unstored:
            self._first_unstored_at = time.monotonic()
        self._unstored.append(chunk)
        self._unstored_bytes += len(data)
        self.total_bytes += len(data)
        publisher.publish_log(self.evaluation_id, chunk.seq, chunk.stream, chunk.text)
        if self._unstored_bytes >= FLUSH_BYTES or len(self._unstored) >= FLUSH_CHUNKS:
            self.flush()
        elif not ending:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if self._unstored and time.monotonic() - self._first_unstored_at >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Store the unstored chunks as one batch; while the database is away, keep them and try later."""
        if not self._unstored or self.superseded or time.monotonic() < self._retry_at:
            return
        try:
            self._store_unstored()
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("output of %s kept in memory, database unavailable: %s", self.evaluation_id, exc)
            forget_connection()
            self._retry_at = time.monotonic() + DB_RETRY_PAUSE_S

    def flush_all(self) -> None:
        """At the end of the run: everything unstored must reach the database (or the retry budget runs out)."""

        def attempt() -> None:
            self._retry_at = 0.0
            if self._unstored and not self.superseded:
                self._store_unstored()

        with_db_retry(attempt, f"storing the output of {self.evaluation_id}")

    def insert_unstored(self) -> None:
        """Insert the unstored chunks in the caller's transaction (the run's end: its last chunks and its
        terminal transition in one commit, with no stored mark: the end says how far the output is
        stored); ``committed`` once it is. An IntegrityError (a seq taken) breaks that transaction:
        the caller then stores them with ``flush_all``, which tells a lost answer from another attempt."""
        if self._unstored and not self.superseded:
            OutputChunk.objects.bulk_create(self._unstored)

    def committed(self) -> None:
        """What ``insert_unstored`` inserted was committed."""
        if self._unstored and not self.superseded:
            self.stored_seq = self._unstored[-1].seq
            self._unstored, self._unstored_bytes = [], 0
            self._retry_at = 0.0

    def _store_unstored(self) -> None:
        """One INSERT for the batch; if a seq is taken, chunk by chunk to tell a lost answer from another attempt."""
        try:
            with transaction.atomic():
                OutputChunk.objects.bulk_create(self._unstored)
        except IntegrityError:
            for chunk in self._unstored:
                if not self._store_one(chunk):
                    self._supersede(chunk.seq)
                    return
        self.stored_seq = self._unstored[-1].seq
        self._unstored, self._unstored_bytes = [], 0
        self._retry_at = 0.0
        publisher.publish_stored(self.evaluation_id, self.stored_seq)

    def _store_one(self, chunk: OutputChunk) -> bool:
        """Store ``chunk`` unless it is stored already (ours, from a write whose answer was lost); False if
        its seq holds other data."""
        try:
            with transaction.atomic():
                OutputChunk.objects.create(
                    evaluation_id=chunk.evaluation_id, seq=chunk.seq, stream=chunk.stream, data=chunk.data
                )
            return True
        except IntegrityError:
            existing = OutputChunk.objects.filter(evaluation_id=self.evaluation_id, seq=chunk.seq).first()
            return existing is not None and bytes(existing.data) == bytes(chunk.data)

    def _supersede(self, seq: int) -> None:
        """Another attempt owns ``seq``: write nothing more, and forget the seqs handed out after the stored ones."""
        self.superseded = True
        self.seq = self.stored_seq = seq - 1
        self._unstored, self._unstored_bytes = [], 0
        log.warning("evaluation %s: seq %d written by another attempt; output dropped", self.evaluation_id, seq)
