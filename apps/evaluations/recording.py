"""Store a run's output as ordered chunks and publish each one live.

Output arrives in many small pieces; storing each as a row would cost a write per line. The
recorder coalesces consecutive pieces of the same stream for up to ``FLUSH_INTERVAL_S`` or
``FLUSH_BYTES`` and flushes earlier when the stream changes, so order is kept exactly.
"""

from __future__ import annotations

import time

from apps.evaluations import publisher
from apps.evaluations.models import OutputChunk

FLUSH_INTERVAL_S = 0.05
FLUSH_BYTES = 64 * 1024


class OutputRecorder:
    def __init__(self, evaluation_id, start_seq: int = 0):
        self.evaluation_id = evaluation_id
        self.seq = start_seq
        self.total_bytes = 0
        self._stream: str | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._first_pending_at = 0.0

    def write(self, stream: str, data: bytes) -> None:
        if not data:
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
        if not self._pending:
            return
        data = b"".join(self._pending)
        stream = self._stream
        self._pending, self._pending_bytes = [], 0
        self.seq += 1
        chunk = OutputChunk.objects.create(evaluation_id=self.evaluation_id, seq=self.seq, stream=stream, data=data)
        publisher.publish_log(self.evaluation_id, chunk.seq, chunk.stream, chunk.text)
