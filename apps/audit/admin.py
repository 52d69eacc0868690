"""The audit trail in the admin: read-only, searchable, fast on a big table."""

from django.contrib import admin

from apps.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the application only ever appends audit events."""

    list_display = ("created_at", "action", "actor_name", "target", "source_ip")
    list_filter = ("action",)
    search_fields = ("action", "actor_name", "target")
    list_select_related = ("actor",)
    show_full_result_count = False
    readonly_fields = ("created_at", "actor", "actor_name", "action", "target", "source_ip", "details")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
