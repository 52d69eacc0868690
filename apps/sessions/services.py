"""The business rules of sessions: what the API, the pages, the admin and the operator console call.

``create`` admits a session (kill switch, quota, a host to run it) and asks the hosts to start it;
``wait_ready`` waits for the host's answer. ``execute``, ``write_file`` and ``read_file`` go to the
host that serves the session (``rpc.call``) and come back with its answer. ``end``, ``stop`` and
``end_all`` end sessions with a reason (once: the first reason wins) and tell their host.
"""

from __future__ import annotations

import logging
import posixpath
import uuid

from django.conf import settings
from django.db import transaction
from rq.suspension import is_suspended

from apps.audit import services as audit
from apps.monitoring import alerts, incidents
from apps.sessions import publisher, rpc
from apps.sessions.limits import session_limits
from apps.sessions.models import LIVE_STATUSES, EndReason, Session, Status
from crucible import redis_clients

log = logging.getLogger(__name__)

WORKSPACE = "/sandbox"
MAX_PATH_CHARS = 4096
# File operations may not reach into the kernel's own file systems (what the sandbox does not
# expose as files: it may still read them with a command).
HIDDEN_ROOTS = ("/proc", "/sys", "/dev")
EXPOSED_UNDER_HIDDEN = ("/dev/shm",)
# How long past an exec's timeout the API waits for the host's answer.
ANSWER_SLACK_S = 45.0
FILE_ANSWER_S = 180.0
QUOTA_RETRY_AFTER_S = 30


class SessionError(Exception):
    """A request the API answers with ``status`` and ``detail`` (and ``extra`` fields)."""

    def __init__(self, http_status: int, detail: str, code: str = "", **extra) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code, self.extra = http_status, detail, code, extra


def _ended_error(session: Session) -> SessionError:
    return SessionError(
        409,
        f"the session has ended ({session.end_reason or 'ended'})"
        if session.status == Status.ENDED
        else "the session is still starting",
        status=session.status,
        end_reason=session.end_reason or None,
    )


# --- paths -----------------------------------------------------------------------------------


def resolve_path(path: object, *, what: str = "path") -> str:
    """An absolute, normalised path in the sandbox (relative ones are under the workspace).

    Raises ``SessionError`` 400 ``bad_path`` for what is not a path the sandbox exposes."""
    if not isinstance(path, str) or not path:
        raise SessionError(400, f"{what} is required", "bad_path")
    if "\0" in path or len(path) > MAX_PATH_CHARS:
        raise SessionError(400, f"{what} must be at most {MAX_PATH_CHARS} characters, without NUL", "bad_path")
    absolute = posixpath.normpath(posixpath.join(WORKSPACE, path))
    if absolute.startswith("//"):
        absolute = "/" + absolute.lstrip("/")
    hidden = any(absolute == root or absolute.startswith(root + "/") for root in HIDDEN_ROOTS)
    exposed = any(absolute == root or absolute.startswith(root + "/") for root in EXPOSED_UNDER_HIDDEN)
    if hidden and not exposed:
        raise SessionError(400, f"{path}: not a place the sandbox exposes for files", "bad_path")
    return absolute


# --- starting ----------------------------------------------------------------------------------


def kill_switch_engaged() -> bool:
    return bool(is_suspended(redis_clients.rq_connection()))


def create(owner, *, fields: dict, request=None) -> tuple[Session, str]:
    """Admit a new session for ``owner`` and ask the hosts to start it; returns it and the id of the
    start request (``wait_ready`` waits on it). ``fields`` are validated (``api.serializers``)."""
    if kill_switch_engaged():
        raise SessionError(503, "the kill switch is engaged: no new sessions until an operator releases it")
    live = Session.objects.filter(owner=owner, status__in=LIVE_STATUSES).count()
    if live >= settings.SESSION_MAX_ACTIVE_PER_USER:
        raise SessionError(
            429,
            f"you have {live} live sessions, the most allowed ({settings.SESSION_MAX_ACTIVE_PER_USER}); end one first",
            retry_after=QUOTA_RETRY_AFTER_S,
        )
    if not rpc.live_hosts():
        raise SessionError(503, "no session host is running: sessions cannot start now")
    session_limits(fields["memory_mb"], fields["cpus"])  # validated already; fails loudly if not
    session = Session.objects.create(owner=owner, **fields)
    start_id = uuid.uuid4().hex
    transaction.on_commit(
        lambda: rpc.send(rpc.STARTS, {"op": "start", "session": str(session.pk)}, request_id=start_id)
    )
    audit.record("session.create", actor=owner, target=session.pk, request=request, image=session.image)
    return session, start_id


def wait_ready(session: Session, start_id: str, timeout_s: float) -> Session:
    """Wait up to ``timeout_s`` for the host's answer to the start request; the session as it is then."""
    if timeout_s > 0:
        try:
            rpc.wait_reply(start_id, timeout_s)
        except rpc.HostUnavailable:
            pass
    session.refresh_from_db()
    return session


# --- ending ------------------------------------------------------------------------------------


def end(session: Session, reason: EndReason, *, actor=None, request=None, error: str = "", before_host=None) -> bool:
    """End ``session`` (starting or ready) and tell its host; False when it had ended already.
    ``before_host()`` runs once the row is ended, before the host is told (a stop's incident is
    then open before the host records the evidence on it)."""
    host = session.host
    if not session.end(reason, error):
        return False
    publisher.publish_end(session)
    audit.record(
        f"session.{'delete' if reason == EndReason.DELETED else 'end'}",
        actor=actor,
        target=session.pk,
        request=request,
        reason=reason,
    )
    if before_host is not None:
        before_host()
    if host:
        try:
            message = {"op": "end", "session": str(session.pk), "reason": str(reason), "noreply": True}
            rpc.send(rpc.requests_key(host), message)
        except Exception:
            # The host notices by itself (it checks its sessions' rows) and the reconciler removes
            # containers of ended sessions.
            log.warning("could not tell host %s that session %s ended", host, session.pk, exc_info=True)
    return True


def stop(session: Session, *, actor=None, request=None) -> bool:
    """Emergency stop: the sandbox is killed now, an alert is raised and the stop is audited."""

    def alert_and_incident() -> None:
        alert = alerts.raise_emergency_stop_alert(session_id=session.pk, actor=actor)
        if alert is not None:
            publisher.publish_alert(session.pk, alert.as_message())
        incidents.open_for_emergency_stop(session_id=session.pk, owner_id=session.owner_id, actor=actor, alert=alert)

    if not end(
        session, EndReason.STOPPED, actor=actor, request=request, error="emergency stop", before_host=alert_and_incident
    ):
        return False
    audit.record("session.stop", actor=actor, target=session.pk, request=request)
    return True


def end_all(reason: EndReason, *, actor=None, request=None) -> list[str]:
    """End every live session (the kill switch); returns their ids."""
    ended = []
    for session in Session.objects.live().only("id", "status", "host", "owner_id"):
        opened = None
        if reason == EndReason.KILL_SWITCH:

            def opened(session=session) -> None:
                incidents.open_for_emergency_stop(
                    session_id=session.pk, owner_id=session.owner_id, actor=actor, via="kill switch"
                )

        if end(session, reason, actor=actor, request=request, error="the kill switch was engaged", before_host=opened):
            ended.append(str(session.pk))
    return ended


# --- requests to the host ------------------------------------------------------------------------


def _call(session: Session, message: dict, *, timeout_s: float, payload: bytes | None = None):
    """Send ``message`` to the host serving ``session``; its answer and bytes. A host that is gone
    ends the session (``worker_lost``) and the request gets a 409."""
    if session.status != Status.READY:
        raise _ended_error(session)
    if not rpc.host_is_live(session.host):
        _lose(session)
    try:
        answer, out = rpc.call(
            session.host, {**message, "session": str(session.pk)}, timeout_s=timeout_s, payload=payload
        )
    except rpc.HostUnavailable:
        if not rpc.host_is_live(session.host):
            _lose(session)
        raise SessionError(504, "the session host did not answer in time")
    status = answer.get("status", 500)
    if status == 409:
        session.refresh_from_db()
        raise _ended_error(session) if session.status != Status.READY else SessionError(409, answer.get("detail", ""))
    if status != 200:
        raise SessionError(
            status if status in (400, 503) else 502, str(answer.get("detail", "the session host failed"))
        )
    return answer, out


def _lose(session: Session) -> None:
    end(session, EndReason.WORKER_LOST, error="the session host serving it went away")
    session.refresh_from_db()
    raise _ended_error(session)


def execute(
    session: Session, *, cmd: list[str], stdin: bytes | None, env: dict, cwd: str, timeout_s: float, user: str
) -> tuple[dict, bytes, bytes]:
    """Run one command in the session; its result (``seq``, ``returncode`` …), stdout and stderr."""
    message = {"op": "exec", "cmd": cmd, "env": env, "cwd": cwd, "timeout_s": timeout_s, "user": user}
    answer, out = _call(session, message, timeout_s=timeout_s + ANSWER_SLACK_S, payload=stdin)
    out = out or b""
    split = min(max(int(answer.get("stdout_len", 0)), 0), len(out))
    return answer, out[:split], out[split:]


def write_file(session: Session, path: str, content: bytes) -> dict:
    answer, _out = _call(session, {"op": "write", "path": path}, timeout_s=FILE_ANSWER_S, payload=content)
    return answer


def read_file(session: Session, path: str, max_bytes: int) -> tuple[dict, bytes]:
    answer, out = _call(session, {"op": "read", "path": path, "max_bytes": max_bytes}, timeout_s=FILE_ANSWER_S)
    return answer, out or b""
