"""Write and read the audit trail. Call ``record()`` from services; never write AuditEvent rows by hand.

Every app writes here (``from apps.audit import services as audit``; ``audit.record(...)``), so this
app imports no other: it is the bottom layer everyone may lean on.
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from django.db.models import Q, QuerySet

from apps.audit.models import AuditEvent

log = logging.getLogger("crucible.audit")

KNOWN_ACTIONS_CACHE_KEY = "audit:known-actions"
KNOWN_ACTIONS_CACHE_S = 60
KNOWN_ACTIONS_MAX = 200


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


def search(*, action: str = "", actor: str = "", target: str = "") -> QuerySet[AuditEvent]:
    """Events newest first, filtered by an action prefix, an actor's name ("system" for none) and a target part."""
    events = AuditEvent.objects.all()
    if action:
        events = events.filter(action__istartswith=action)
    if actor:
        events = events.filter(Q(actor_name__iexact=actor) | (Q(actor_name="") if actor == "system" else Q(pk__in=[])))
    if target:
        events = events.filter(target__icontains=target)
    return events.order_by("-created_at", "-pk")


def known_actions() -> list[str]:
    """The action names recorded so far (for the filter's suggestions), cached for a minute."""
    actions = cache.get(KNOWN_ACTIONS_CACHE_KEY)
    if actions is None:
        actions = sorted(AuditEvent.objects.order_by().values_list("action", flat=True).distinct()[:KNOWN_ACTIONS_MAX])
        cache.set(KNOWN_ACTIONS_CACHE_KEY, actions, KNOWN_ACTIONS_CACHE_S)
    return sorted(actions)
