"""Admin changes go into the audit trail: every django.contrib.admin LogEntry is mirrored as an AuditEvent."""

from __future__ import annotations

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.audit.services import record
from crucible.middleware import current_request

_VERBS = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}


@receiver(post_save, sender=LogEntry, dispatch_uid="audit_admin_change")
def audit_admin_change(sender, instance: LogEntry, created: bool, raw: bool = False, **kwargs):
    if not created or raw:
        return
    content_type = instance.content_type
    model = f"{content_type.app_label}.{content_type.model}" if content_type else "unknown"
    record(
        f"admin.{_VERBS.get(instance.action_flag, 'action')}",
        actor=instance.user,
        target=f"{model}:{instance.object_id or ''}",
        request=current_request(),
        object=instance.object_repr[:200],
        change=instance.get_change_message()[:1000],
    )
