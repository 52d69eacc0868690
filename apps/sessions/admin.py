"""Operators' admin for sessions: read-only records (status changes go through ``services``), fast on
big tables (no full counts, select_related, raw ids), and an action that ends the selected sessions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apps.sessions import services
from apps.sessions.models import EndReason, Session, Step

STEPS_INLINE_MAX = 50


class StepInline(admin.TabularInline):
    """The first steps of a session, read-only; the whole transcript is a link away (the session page)."""

    model = Step
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = ["seq", "kind", "status", "cmd", "path", "returncode", "error", "duration_ms"]
    ordering = ["seq"]

    def get_queryset(self, request):
        # The inline shows the beginning; a long transcript is read on the session page or downloaded.
        queryset = super().get_queryset(request)
        first = queryset.order_by("seq").values_list("pk", flat=True)[:STEPS_INLINE_MAX]
        return queryset.filter(pk__in=list(first))

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "status", "end_reason", "language", "host", "step_count", "created_at", "ended_at"]
    list_filter = ["status", "end_reason", "host", "language"]
    search_fields = ["=id", "owner__username"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    actions = ["end_selected"]
    readonly_fields = [f.name for f in Session._meta.fields] + ["transcript"]
    inlines = [StepInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Read-only: a saved form would write back every column over a status the host just changed.
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the record is kept; end the session instead

    @admin.display(description="Transcript")
    def transcript(self, session):
        return format_html(
            '<a href="{}">session page</a> · <a href="{}?format=jsonl">download (JSONL)</a>',
            reverse("sessions:detail", args=[session.pk]),
            reverse("api-session-execs", args=[session.pk]),
        )

    @admin.action(description="End selected sessions")
    def end_selected(self, request, queryset):
        ended = sum(
            services.end(session, EndReason.DELETED, actor=request.user, request=request) for session in queryset
        )
        messages.success(request, f"Ended {ended} session(s); {len(queryset) - ended} had ended already.")


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    """Transcript steps, read-only: they are the record of what ran."""

    list_display = ["session", "seq", "kind", "status", "returncode", "error", "duration_ms", "started_at"]
    list_filter = ["kind", "status"]
    search_fields = ["=session__id"]
    raw_id_fields = ["session"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Step._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
