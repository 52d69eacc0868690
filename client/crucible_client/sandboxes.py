"""``client.sandboxes``: long-lived agent sandboxes (sessions): exec, files, transcript (contract v2).

A sandbox runs under the same policy as an evaluation (no network, read-only root, non-root user
``sandbox``, limits); its working directory ``/sandbox`` is writable and where relative paths go.
Errors of a file route carry the server's ``code`` (``not_found``, ``is_a_directory``,
``not_a_directory``, ``bad_path``, ``permission_denied``, ``too_large``); a route of an ended
session raises ``SessionEnded`` (409) with its ``end_reason``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

from crucible_client._transport import Transport
from crucible_client._util import fields, segment
from crucible_client.errors import SandboxNotReady
from crucible_client.types import ExecResult, FileWritten, Sandbox, TranscriptPage, TranscriptStep

# An exec without a timeout runs up to the server's default (exec_timeout_s_default); the HTTP
# read waits that long plus a margin, and at most this when the caller names no timeout.
EXEC_READ_TIMEOUT_DEFAULT_S = 3600.0
EXEC_READ_MARGIN_S = 30.0
FILE_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 120.0


def sandbox_path(sandbox_id: str, rest: str = "") -> str:
    return f"/api/v1/sandboxes/{segment(sandbox_id)}/{rest}"


def output_bytes(result: ExecResult, stream: str = "stdout") -> bytes:
    """A stream's exact bytes: ``<stream>_base64`` when the server sent it (not UTF-8), else the text."""
    raw = result.get(f"{stream}_base64")  # type: ignore[misc]
    if raw:
        return base64.b64decode(raw)
    return (result.get(stream) or "").encode("utf-8")  # type: ignore[misc]


class Sandboxes:
    def __init__(self, transport: Transport):
        self._t = transport

    # --- lifecycle ------------------------------------------------------------------------------
    def create(
        self,
        *,
        language: str | None = None,
        image: str | None = None,
        memory_mb: int | None = None,
        cpus: float | None = None,
        idle_timeout_s: int | None = None,
        max_lifetime_s: int | None = None,
        metadata: dict[str, Any] | None = None,
        wait: bool = True,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> Sandbox:
        """Start a sandbox. With ``wait`` (the default) return it ready, or raise ``SandboxNotReady``
        when it ended while starting (``end_reason``/``error`` say why) or is not ready in time."""
        body = fields(
            language=language,
            image=image,
            memory_mb=memory_mb,
            cpus=cpus,
            idle_timeout_s=idle_timeout_s,
            max_lifetime_s=max_lifetime_s,
            metadata=metadata,
        )
        # The POST waits (~30 s) for the sandbox to be ready: read for longer than that.
        sandbox = self._t.json("POST", "/api/v1/sandboxes/", expect=(201,), json=body, timeout=(10, 90))
        return self.wait_ready(sandbox, timeout_s=ready_timeout_s) if wait else sandbox

    def wait_ready(self, sandbox: Sandbox | str, *, timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.5) -> Sandbox:
        """Poll a ``starting`` sandbox until it is ready; ``SandboxNotReady`` if it ends or the time runs out."""
        if isinstance(sandbox, str):
            sandbox = self.get(sandbox)
        deadline = time.monotonic() + timeout_s
        while sandbox.get("status") == "starting":
            if time.monotonic() >= deadline:
                raise SandboxNotReady(f"sandbox {sandbox.get('id')} still starting after {timeout_s} s", sandbox)
            time.sleep(poll_s)
            sandbox = self.get(sandbox["id"])
        if sandbox.get("status") != "ready":
            reason = sandbox.get("end_reason") or sandbox.get("status")
            detail = f": {sandbox['error']}" if sandbox.get("error") else ""
            raise SandboxNotReady(f"sandbox {sandbox.get('id')} ended while starting ({reason}){detail}", sandbox)
        return sandbox

    def get(self, sandbox_id: str) -> Sandbox:
        return self._t.json("GET", sandbox_path(sandbox_id))

    def list(self, *, status: str | None = None, limit: int | None = 50) -> list[Sandbox]:
        """Yours, newest first (operators: everyone's); ``status``: starting, ready or ended."""
        return list(self._t.paged("/api/v1/sandboxes/", params=fields(status=status), limit=limit))

    def delete(self, sandbox_id: str) -> Sandbox:
        """End it (reason ``deleted``); also fine when it has already ended."""
        return self._t.json("DELETE", sandbox_path(sandbox_id), expect=(202,))

    def stop(self, sandbox_id: str) -> Sandbox:
        """Emergency stop (reason ``stopped``, with an alert and an audit entry)."""
        return self._t.json("POST", sandbox_path(sandbox_id, "stop/"), expect=(202,))

    # --- inside ----------------------------------------------------------------------------------
    def exec(
        self,
        sandbox_id: str,
        cmd: list[str],
        *,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        user: str | None = None,
    ) -> ExecResult:
        """Run ``cmd`` (argv, no shell) and return its result. A command that could not start has
        ``returncode`` None and ``error`` set; ``timed_out`` and ``truncated`` say what the limits did.

        Never retried after a dropped connection: the command may have run."""
        body: dict[str, Any] = fields(cmd=list(cmd), env=env, cwd=cwd, timeout_s=timeout_s, user=user)
        if isinstance(input, bytes):
            body["input_base64"] = base64.b64encode(input).decode("ascii")
        elif input is not None:
            body["input"] = input
        read = EXEC_READ_TIMEOUT_DEFAULT_S if timeout_s is None else timeout_s + EXEC_READ_MARGIN_S
        return self._t.json("POST", sandbox_path(sandbox_id, "exec/"), json=body, timeout=(10, read), sandbox=True)

    def write_file(self, sandbox_id: str, path: str, data: bytes | str) -> FileWritten:
        """Write ``data`` (text as UTF-8) to ``path`` (relative to /sandbox or absolute); parents are created."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return self._t.json(
            "PUT",
            sandbox_path(sandbox_id, "files/"),
            params={"path": path},
            data=payload,
            headers={"Content-Type": "application/octet-stream"},
            timeout=(10, FILE_TIMEOUT_S),
            sandbox=True,
        )

    def read_file(self, sandbox_id: str, path: str, *, max_bytes: int | None = None) -> bytes:
        """A file's bytes; ``PayloadTooLarge`` (413, code ``too_large``) when it is over ``max_bytes``."""
        response = self._t.request(
            "GET",
            sandbox_path(sandbox_id, "files/"),
            params=fields(path=path, max_bytes=max_bytes),
            headers={"Accept": "application/octet-stream, application/json"},
            timeout=(10, FILE_TIMEOUT_S),
            sandbox=True,
        )
        return response.content

    # --- the record --------------------------------------------------------------------------------
    def transcript(self, sandbox_id: str, after: int = 0) -> TranscriptPage:
        """One page of transcript steps with ``seq > after``."""
        return self._t.json("GET", sandbox_path(sandbox_id, "execs/"), params={"after": after})

    def iter_transcript(self, sandbox_id: str, after: int = 0) -> Iterator[TranscriptStep]:
        """Every recorded step after ``after``, page by page (what is recorded now)."""
        while True:
            page = self.transcript(sandbox_id, after)
            steps = page.get("steps", [])
            yield from steps
            if not steps or page.get("next", after) == after:
                return
            after = page["next"]

    def transcript_jsonl(self, sandbox_id: str, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """Every step as JSON lines (``?format=jsonl``), streamed."""
        response = self._t.request(
            "GET",
            sandbox_path(sandbox_id, "execs/"),
            params={"format": "jsonl"},
            headers={"Accept": "*/*"},
            stream=True,
        )
        with response:
            yield from response.iter_content(chunk_size=chunk_size)
