"""``client.evaluations``: submit programs, follow them, read their results (contract v1/v2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

from crucible_client._transport import Transport
from crucible_client._util import fields, segment
from crucible_client.types import (
    TERMINAL_STATUSES,
    Artifact,
    Evaluation,
    EvaluationResults,
    LogChunk,
    LogPage,
)


def evaluation_path(evaluation_id: str, rest: str = "") -> str:
    return f"/api/v1/evaluations/{segment(evaluation_id)}/{rest}"


class Evaluations:
    def __init__(self, transport: Transport):
        self._t = transport

    def submit(
        self,
        code: str,
        *,
        language: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        cpus: float | None = None,
        priority: str | None = None,
        metadata: dict[str, Any] | None = None,
        callback_url: str | None = None,
        files: dict[str, str] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        name: str | None = None,
        labels: list[str] | None = None,
    ) -> Evaluation:
        """Submit a program; with ``idempotency_key`` a retried submission returns the same evaluation
        (and is retried after a dropped connection, which is otherwise never done for a POST)."""
        body = fields(
            code=code,
            language=language,
            stdin=stdin,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            cpus=cpus,
            priority=priority,
            metadata=metadata,
            callback_url=callback_url,
            files=files,
            args=args,
            env=env,
            name=name,
            labels=labels,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._t.json("POST", "/api/v1/evaluations/", expect=(200, 201), json=body, headers=headers)

    def get(self, evaluation_id: str) -> Evaluation:
        return self._t.json("GET", evaluation_path(evaluation_id))

    def list(
        self,
        *,
        status: str | None = None,
        q: str | None = None,
        limit: int | None = 50,
        language: str | None = None,
        label: str | None = None,
        name: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
    ) -> list[Evaluation]:
        """Yours, newest first (staff: everyone's); at most ``limit``, fetched page by page (None: every page).

        ``created_after``/``created_before``: ISO dates or times (contract v2)."""
        params = fields(
            status=status,
            q=q,
            language=language,
            label=label,
            name=name,
            created_after=created_after,
            created_before=created_before,
        )
        return list(self._t.paged("/api/v1/evaluations/", params=params, limit=limit))

    def cancel(self, evaluation_id: str) -> Evaluation:
        """Cancel (the record is kept): a queued one never starts, a running one gets SIGTERM then SIGKILL."""
        return self._t.json("DELETE", evaluation_path(evaluation_id), expect=(202,))

    def stop(self, evaluation_id: str) -> Evaluation:
        """Emergency stop: SIGKILL now, status ``stopped``, an alert and an audit entry."""
        return self._t.json("POST", evaluation_path(evaluation_id, "stop/"), expect=(202,))

    def logs(self, evaluation_id: str, after: int = 0) -> LogPage:
        """One page of output chunks with ``seq > after``."""
        return self._t.json("GET", evaluation_path(evaluation_id, "logs/"), params={"after": after})

    def iter_logs(self, evaluation_id: str, after: int = 0) -> Iterator[LogChunk]:
        """Every stored chunk after ``after``, page by page (what is stored now; it does not wait for more)."""
        while True:
            page = self.logs(evaluation_id, after)
            chunks = page.get("chunks", [])
            yield from chunks
            if not chunks or page.get("next", after) == after:
                return
            after = page["next"]

    def results(self, evaluation_id: str) -> EvaluationResults:
        return self._t.json("GET", evaluation_path(evaluation_id, "results/"))

    def artifacts(self, evaluation_id: str) -> list[Artifact]:
        return self._t.json("GET", evaluation_path(evaluation_id, "artifacts/"))

    def artifact(self, evaluation_id: str, name: str) -> bytes:
        """One artifact's bytes."""
        parts = (segment(part) if part.strip(".") else part.replace(".", "%2E") for part in name.split("/"))
        path = evaluation_path(evaluation_id, "artifacts/") + "/".join(parts)  # a "." or ".." part stays a name
        return self._t.request("GET", path, headers={"Accept": "*/*"}).content

    def wait(self, evaluation_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0) -> Evaluation:
        """Poll until the evaluation is terminal; ``TimeoutError`` past ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            evaluation = self.get(evaluation_id)
            if evaluation.get("status") in TERMINAL_STATUSES:
                return cast(Evaluation, evaluation)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"evaluation {evaluation_id} still {evaluation.get('status')} after {timeout_s} s")
            time.sleep(poll_s)
