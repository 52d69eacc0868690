"""``client.batches``: many samples scored against tasks, with pass@k (contract v2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from crucible_client._transport import Transport
from crucible_client._util import fields, segment
from crucible_client.types import FINAL_BATCH_STATUSES, Batch, SampleResult


def batch_path(batch_id: str, rest: str = "") -> str:
    return f"/api/v1/batches/{segment(batch_id)}/{rest}"


class Batches:
    def __init__(self, transport: Transport):
        self._t = transport

    def submit(
        self,
        samples: list[dict[str, Any] | str],
        *,
        task: str | None = None,
        samples_are: str | None = None,
        k: list[int] | None = None,
        priority: str | None = None,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        reuse: str | None = None,
    ) -> Batch:
        """``samples``: ``{"code", "task"?, "metadata"?}`` each, or a string (the code)."""
        body = fields(
            samples=[{"code": s} if isinstance(s, str) else s for s in samples],
            task=task,
            samples_are=samples_are,
            k=k,
            priority=priority,
            callback_url=callback_url,
            metadata=metadata,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            reuse=reuse,
        )
        return self._t.json("POST", "/api/v1/batches/", expect=(201,), json=body)

    def get(self, batch_id: str) -> Batch:
        return self._t.json("GET", batch_path(batch_id))

    def list(self, *, limit: int | None = 50) -> list[Batch]:
        return list(self._t.paged("/api/v1/batches/", limit=limit))

    def results(self, batch_id: str, *, limit: int | None = None) -> Iterator[SampleResult]:
        """Per sample, per test verdicts, page by page."""
        return self._t.paged(batch_path(batch_id, "results/"), limit=limit)

    def results_jsonl(self, batch_id: str, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """The whole batch's results as JSON lines, streamed as the server sends them."""
        response = self._t.request(
            "GET", batch_path(batch_id, "results/"), params={"format": "jsonl"}, headers={"Accept": "*/*"}, stream=True
        )
        with response:
            yield from response.iter_content(chunk_size=chunk_size)

    def cancel(self, batch_id: str) -> Batch:
        """Cancel every sample that has not ended; 202 with the batch."""
        return self._t.json("DELETE", batch_path(batch_id), expect=(202,))

    def wait(self, batch_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0) -> Batch:
        """Poll until the batch is completed or cancelled; ``TimeoutError`` past ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            batch = self.get(batch_id)
            if batch.get("status") in FINAL_BATCH_STATUSES:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} still {batch.get('status')} after {timeout_s} s")
            time.sleep(poll_s)
