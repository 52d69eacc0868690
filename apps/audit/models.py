"""The audit trail: one append-only row per security-relevant action."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """Who did what, to what, when, from where. The application only ever inserts these rows.

    The table keeps the name it had when the model lived in ``monitoring``, so existing
    installations keep their history (the move is state-only, see migrations/0001_initial.py).
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    actor_name = models.CharField(max_length=150, blank=True, editable=False)  # kept if the user is deleted
    action = models.CharField(max_length=64, db_index=True, editable=False)
    target = models.CharField(max_length=200, blank=True, db_index=True, editable=False)
    source_ip = models.GenericIPAddressField(null=True, blank=True, editable=False)
    details = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        db_table = "monitoring_auditevent"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["actor", "-created_at"], name="monitoring__actor_i_182530_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action} {self.target}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only")
