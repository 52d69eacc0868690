"""How sessions look in the API (architecture.md, Sessions)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.monitoring.models import Incident
from apps.sessions.limits import exec_limits
from apps.sessions.models import Session
from apps.sessions.services import WORKSPACE


class SessionSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    end_reason = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField(read_only=True)
    cwd = serializers.SerializerMethodField()
    user = serializers.SerializerMethodField()
    limits = serializers.SerializerMethodField()
    incident = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = [
            "id",
            "status",
            "end_reason",
            "error",
            "owner",
            "language",
            "image",
            "image_digest",
            "sandbox_runtime",
            "memory_mb",
            "cpus",
            "idle_timeout_s",
            "max_lifetime_s",
            "metadata",
            "cwd",
            "user",
            "created_at",
            "ready_at",
            "ended_at",
            "last_activity_at",
            "expires_at",
            "step_count",
            "limits",
            "incident",
        ]
        read_only_fields = fields

    def get_end_reason(self, session) -> str | None:
        return session.end_reason or None

    def get_cwd(self, session) -> str:
        return WORKSPACE

    def get_user(self, session) -> str:
        return "sandbox"

    def get_limits(self, session) -> dict:
        return exec_limits()

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_incident(self, session) -> int | None:
        """The safety incident opened on this session, if any (its id: details under /api/v1/incidents/)."""
        if hasattr(session, "incident_pk"):  # annotated by the list
            return session.incident_pk
        return Incident.objects.filter(session_id=session.pk).values_list("pk", flat=True).first()
