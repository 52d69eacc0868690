"""Operators' admin for monitoring: rules (editable), alerts and samples (read-mostly), fast on big tables."""

from django.contrib import admin, messages

from apps.monitoring import alerts, incidents
from apps.monitoring.models import Alert, Incident, IncidentEvent, IncidentStatus, ResourceSample, SafetyRule


@admin.register(SafetyRule)
class SafetyRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "threshold", "duration_s", "pattern", "severity", "action", "enabled"]
    list_editable = ["enabled"]
    list_filter = ["kind", "severity", "action", "enabled"]
    search_fields = ["name", "pattern", "description"]
    fieldsets = [
        (None, {"fields": ["name", "description", "kind", "enabled"]}),
        ("Condition", {"fields": ["threshold", "duration_s", "pattern"]}),
        ("Response", {"fields": ["severity", "action"]}),
    ]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["created_at", "severity", "rule_name", "evaluation_id", "message", "acknowledged_at"]
    list_filter = ["severity", "rule_name", ("acknowledged_at", admin.EmptyFieldListFilter)]
    search_fields = ["=evaluation_id", "rule_name", "message"]
    list_select_related = ["rule", "acknowledged_by"]
    raw_id_fields = ["rule", "acknowledged_by"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    actions = ["acknowledge_selected"]
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge_selected(self, request, queryset):
        count = sum(alerts.acknowledge(alert, actor=request.user, request=request) for alert in queryset)
        messages.success(request, f"Acknowledged {count} alert(s).")


@admin.register(ResourceSample)
class ResourceSampleAdmin(admin.ModelAdmin):
    list_display = ["evaluation_id", "at", "cpu_percent", "memory_bytes", "pids", "output_bytes_per_s"]
    search_fields = ["=evaluation_id"]
    show_full_result_count = False
    readonly_fields = [f.name for f in ResourceSample._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "kind", "actor", "detail", "internal"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Incidents: status changes go through ``incidents.transition`` (audited), never a raw edit."""

    list_display = ["pk", "opened_at", "severity", "status", "evaluation_id", "session_id", "owner", "summary"]
    list_filter = ["status", "severity"]
    search_fields = ["=evaluation_id", "=session_id", "summary"]
    raw_id_fields = ["owner", "status_changed_by", "released_by", "alerts"]
    readonly_fields = [f.name for f in Incident._meta.fields]
    inlines = [IncidentEventInline]
    actions = ["mark_acknowledged", "mark_resolved", "mark_false_positive", "release_quarantine"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _transition(self, request, queryset, status: str) -> None:
        for incident in queryset:
            try:
                incidents.transition(incident, status, actor=request.user, comment="(from the admin)", request=request)
            except incidents.TransitionRefused as exc:
                messages.warning(request, f"#{incident.pk}: {exc}")

    @admin.action(description="Mark acknowledged")
    def mark_acknowledged(self, request, queryset):
        self._transition(request, queryset, IncidentStatus.ACKNOWLEDGED)

    @admin.action(description="Mark resolved")
    def mark_resolved(self, request, queryset):
        self._transition(request, queryset, IncidentStatus.RESOLVED)

    @admin.action(description="Mark false positive")
    def mark_false_positive(self, request, queryset):
        self._transition(request, queryset, IncidentStatus.FALSE_POSITIVE)

    @admin.action(description="Release the quarantine")
    def release_quarantine(self, request, queryset):
        count = sum(incidents.release(incident, actor=request.user, request=request) for incident in queryset)
        messages.success(request, f"Released {count} quarantine(s).")
