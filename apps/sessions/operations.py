"""What a session host does for one request on a session it holds: an exec, a file write, a file read.

Each is recorded as a step (``recording``) before it runs and again when it is done, published to the
session's viewers at both points, and answered to the API (``rpc`` reply): a JSON header and, for an
exec's output or a file's content, the bytes beside it. The agent's answers are bounded by the
request (``AgentLink``); nothing from the sandbox is trusted beyond being bytes of a known length.
"""

from __future__ import annotations

from apps.sandboxing.agent_link import AgentLost
from apps.sandboxing.policy import ENVIRONMENT, SANDBOX_UID
from apps.sessions import publisher, recording
from apps.sessions.models import StepKind

ALLOWED_USERS = ("", "sandbox", str(SANDBOX_UID))
# How long past an exec's own timeout the host waits for the agent's answer (it kills the command
# at the timeout and answers then).
ANSWER_SLACK_S = 30.0
FILE_TIMEOUT_S = 120.0
# What the agent may say went wrong (anything else it says is "failed": it answers for a sandbox,
# and a program there can write to its stdout), and the most a transcript row holds.
EXEC_ERRORS = frozenset(
    {
        "not_found",
        "permission_denied",
        "bad_cwd",
        "too_many_processes",
        "interrupted",
        "failed",
        "not_a_directory",
        "is_a_directory",
        "bad_path",
    }
)
FILE_ERRORS = frozenset(
    {
        "not_found",
        "permission_denied",
        "is_a_directory",
        "not_a_directory",
        "not_a_file",
        "too_large",
        "no_space",
        "bad_path",
        "failed",
    }
)
MAX_COUNT = 2**62
MAX_DURATION_MS = 2**31 - 1


def _begin(host, live, kind: StepKind, **fields):
    step = host.db(recording.begin, live.session, kind, **fields)
    if step is not None:
        publisher.publish_step(step)
    return step


def _finish(host, step, **fields) -> None:
    host.db(recording.finish, step, **fields)
    publisher.publish_step(step)


def _not_ready() -> tuple[dict, None]:
    return {"status": 409, "detail": "the session is not ready (it has ended)"}, None


def perform(host, live, op: str, message: dict, payload: bytes | None) -> tuple[dict, bytes | None]:
    if op == "exec":
        return execute(host, live, message, payload)
    if op == "write":
        return write_file(host, live, message, payload or b"")
    if op == "read":
        return read_file(host, live, message)
    return {"status": 400, "detail": f"unknown request {op!r}"}, None


def execute(host, live, message: dict, stdin: bytes | None) -> tuple[dict, bytes | None]:
    argv, env, user = message["cmd"], message.get("env") or {}, message.get("user") or ""
    step = _begin(
        host,
        live,
        StepKind.EXEC,
        cmd=recording.kept_cmd(argv),
        cwd=message["cwd"],
        env_names=sorted(env),
        user=user,
        input_bytes=len(stdin) if stdin is not None else 0,
    )
    if step is None:
        return _not_ready()
    if user not in ALLOWED_USERS:
        result = {
            "returncode": None,
            "error": "user_unsupported",
            "error_message": f"cannot run as {user!r}: the sandbox has no root and one user, 'sandbox'",
            "timed_out": False,
            "truncated": False,
            "stdout_bytes": 0,
            "stderr_bytes": 0,
            "duration_ms": 0,
        }
        _finish(host, step, **_step_fields(result))
        return {"status": 200, "seq": step.seq, **result, "stdout_len": 0}, b""
    cap = live.sandbox.limits.output_cap_bytes
    request = {
        "op": "exec",
        "argv": argv,
        "cwd": message["cwd"],
        "env": {**ENVIRONMENT, **env},
        "timeout": float(message["timeout_s"]),
        "cap": cap,
        "has_input": stdin is not None,
    }
    try:
        header, blobs = live.link.request(
            request, [stdin] if stdin is not None else [], timeout_s=request["timeout"] + ANSWER_SLACK_S, blob_limit=cap
        )
    except AgentLost as exc:
        result = _interrupted(str(exc))
        _finish(host, step, **_step_fields(result))
        return {"status": 200, "seq": step.seq, **result, "stdout_len": 0}, b""
    stdout, stderr = (blobs + [b"", b""])[:2]
    result = {
        "returncode": _exit_status(header.get("returncode")),
        "error": _code(header.get("error"), EXEC_ERRORS) or None,
        "error_message": _said(header.get("message")),
        "timed_out": header.get("timed_out") is True,
        "truncated": header.get("truncated") is True,
        "stdout_bytes": _count(header.get("stdout_bytes"), len(stdout)),
        "stderr_bytes": _count(header.get("stderr_bytes"), len(stderr)),
        "duration_ms": min(_count(header.get("duration_ms"), 0), MAX_DURATION_MS),
    }
    _finish(host, step, stdout=stdout, stderr=stderr, **_step_fields(result))
    host.check_output(live, stdout, stderr)
    return {"status": 200, "seq": step.seq, **result, "stdout_len": len(stdout)}, stdout + stderr


def _said(text) -> str:
    """A message from the agent, as text a row can hold (bounded, no NUL)."""
    return str(text or "")[:500].replace("\0", "\ufffd")


def _count(value, floor: int) -> int:
    """A byte count the agent reports: at least what arrived, at most what a row holds."""
    return (
        min(max(value, floor), MAX_COUNT)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else floor
    )


def _exit_status(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255 else None


def _code(value, known: frozenset[str]) -> str:
    """An error code the agent reports, if it is one of ours; anything else is "failed"."""
    if not value:
        return ""
    return value if isinstance(value, str) and value in known else "failed"


def _interrupted(why: str) -> dict:
    return {
        "returncode": None,
        "error": "interrupted",
        "error_message": f"the command's agent went away: {why}"[:500],
        "timed_out": False,
        "truncated": False,
        "stdout_bytes": 0,
        "stderr_bytes": 0,
        "duration_ms": 0,
    }


def _step_fields(result: dict) -> dict:
    fields = dict(result)
    fields["error"] = fields["error"] or ""
    return fields


def write_file(host, live, message: dict, content: bytes) -> tuple[dict, None]:
    path = message["path"]
    step = _begin(host, live, StepKind.WRITE_FILE, path=path, input_bytes=len(content))
    if step is None:
        return _not_ready()
    try:
        header, _blobs = live.link.request(
            {"op": "write", "path": path}, [content], timeout_s=FILE_TIMEOUT_S, blob_limit=0
        )
    except AgentLost as exc:
        return _lost(host, step, str(exc))
    error = _code(header.get("error"), FILE_ERRORS)
    message_text = _said(header.get("message"))
    _finish(host, step, size=None if error else len(content), error=error, error_message=message_text)
    if error:
        return {"status": 200, "seq": step.seq, "error": error, "message": message_text}, None
    return {
        "status": 200,
        "seq": step.seq,
        "path": path,
        "size": len(content),
        "sha256": str(header.get("sha256"))[:64],
    }, None


def read_file(host, live, message: dict) -> tuple[dict, bytes | None]:
    path, most = message["path"], int(message["max_bytes"])
    step = _begin(host, live, StepKind.READ_FILE, path=path)
    if step is None:
        return _not_ready()
    try:
        header, blobs = live.link.request(
            {"op": "read", "path": path, "max": most}, [], timeout_s=FILE_TIMEOUT_S, blob_limit=most
        )
    except AgentLost as exc:
        return _lost(host, step, str(exc))
    error = _code(header.get("error"), FILE_ERRORS)
    message_text = _said(header.get("message"))
    content = blobs[0] if blobs and not error else b""
    _finish(host, step, size=None if error else len(content), error=error, error_message=message_text)
    if error:
        return {"status": 200, "seq": step.seq, "error": error, "message": message_text}, None
    return {"status": 200, "seq": step.seq, "path": path, "size": len(content)}, content


def _lost(host, step, why: str) -> tuple[dict, None]:
    """A file request whose agent went away (the next request starts a new one): recorded, then a 503."""
    detail = f"the session's agent went away during the request: {why}"[:500]
    _finish(host, step, error="interrupted", error_message=detail)
    return {"status": 503, "detail": detail}, None
