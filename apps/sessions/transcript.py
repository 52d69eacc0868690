"""A session's transcript: every exec and file operation as JSON, the one shape the API, the WebSocket
and the download share. Environment variables appear by name only, never their values."""

from __future__ import annotations

from apps.sessions.models import Step


def step_json(step: Step) -> dict:
    return {
        "seq": step.seq,
        "kind": step.kind,
        "status": step.status,
        "cmd": step.cmd,
        "cwd": step.cwd,
        "env_names": step.env_names,
        "user": step.user,
        "input_bytes": step.input_bytes,
        "path": step.path,
        "size": step.size,
        "returncode": step.returncode,
        "error": step.error or None,
        "error_message": step.error_message,
        "timed_out": step.timed_out,
        "truncated": step.truncated,
        "stdout": step.stdout,
        "stderr": step.stderr,
        "stdout_bytes": step.stdout_bytes,
        "stderr_bytes": step.stderr_bytes,
        "duration_ms": step.duration_ms,
        "started_at": step.started_at.isoformat() if step.started_at else None,
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
    }
