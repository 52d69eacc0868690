"""Record audit events. Call ``record()`` from services, never write AuditEvent rows by hand."""

from __future__ import annotations

import logging

from apps.monitoring.models import AuditEvent

log = logging.getLogger("crucible.audit")


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(action: str, *, actor=None, target: str = "", request=None, **details) -> AuditEvent:
    """Append one audit event. ``actor`` is a user or None (the system); ``details`` must be JSON-able."""
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    event = AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        target=str(target)[:200],
        source_ip=client_ip(request),
        details=details,
    )
    log.info("audit %s actor=%s target=%s %s", action, event.actor_name or "system", event.target, details)
    return event
