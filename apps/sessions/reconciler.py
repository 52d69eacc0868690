"""Repairs what crashes leave behind among sessions (run by the reconciler, ``crucible.cron``):

* a session whose host is gone ends ``worker_lost`` (its agent went with that process);
* a session no host started within ``SESSION_START_TIMEOUT_S`` ends ``error``;
* a session container whose session is not live is removed.

A host counts as gone when its heartbeat is older than ``SESSION_HOST_LOST_AFTER_S``, seen twice a
few heartbeats apart (a Redis that was flushed forgets every host until its next heartbeat).
"""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.utils import timezone

from apps.audit import services as audit
from apps.sandboxing import containers
from apps.sessions import rpc, services
from apps.sessions.models import EndReason, Session, Status

log = logging.getLogger(__name__)

CONTAINER_PREFIX = "session-"


def _lost_hosts(candidates: set[str]) -> set[str]:
    lost = candidates - rpc.live_hosts()
    if lost:
        time.sleep(min(3 * settings.SESSION_HOST_HEARTBEAT_S, settings.SESSION_HOST_LOST_AFTER_S))
        lost -= rpc.live_hosts()
    return lost


def end_lost_sessions() -> list[str]:
    live = Session.objects.live().exclude(host="").only("id", "status", "host")
    lost = _lost_hosts({session.host for session in live})
    ended = []
    for session in live:
        if session.host in lost and services.end(
            session, EndReason.WORKER_LOST, error="the session host serving it went away"
        ):
            ended.append(str(session.pk))
    return ended


def end_unstarted_sessions() -> list[str]:
    since = timezone.now() - timezone.timedelta(seconds=settings.SESSION_START_TIMEOUT_S)
    ended = []
    for session in Session.objects.filter(status=Status.STARTING, host="", created_at__lt=since):
        error = f"no session host started it within {settings.SESSION_START_TIMEOUT_S:g} s"
        if services.end(session, EndReason.ERROR, error=error):
            ended.append(str(session.pk))
    return ended


def session_of(run_id: str) -> str | None:
    """The session id of a session container's run id (``session-<uuid>``), else None."""
    if not run_id.startswith(CONTAINER_PREFIX):
        return None
    try:
        return str(uuid.UUID(run_id[len(CONTAINER_PREFIX) :]))
    except ValueError:
        return None


def remove_orphan_containers() -> list[str]:
    removed = []
    for container_id, run_id in containers.list_instance_containers():
        session_id = session_of(run_id)
        if (
            session_id is None
            or Session.objects.filter(pk=session_id, status__in=[Status.STARTING, Status.READY]).exists()
        ):
            continue
        if containers.removed(container_id, "session container"):
            removed.append(container_id)
            audit.record("reconciler.remove_container", target=session_id, container=container_id[:12])
    return removed


def reconcile() -> dict:
    result = {}
    for key, step in (
        ("sessions_lost", end_lost_sessions),
        ("sessions_unstarted", end_unstarted_sessions),
        ("session_containers_removed", remove_orphan_containers),
    ):
        try:
            result[key] = step()
        except Exception as exc:
            log.warning("reconciler: %s failed: %s", key, exc, exc_info=True)
            result[key] = []
    if any(result.values()):
        log.info("reconciler (sessions): %s", result)
    return result
