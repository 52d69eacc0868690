"""Admin for operators: API tokens (never the hash; revoke action), quotas, webhook secrets (never shown)."""

from django.contrib import admin, messages

from apps.accounts import services
from apps.accounts.models import ApiToken, Quota, WebhookSecret


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at", "status")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username", "user__email")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    show_full_result_count = False
    # key_hash is never shown: it is enough to look up a stolen key's owner, so it stays out of screens.
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    actions = ("revoke_selected",)

    @admin.display(description="status", boolean=False)
    def status(self, obj):
        return obj.status

    def has_add_permission(self, request):
        # A token's key is shown only to its owner, on creation; operators use create_api_token instead.
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead, so the audit trail keeps meaning

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_selected(self, request, queryset):
        revoked = sum(
            services.revoke_token(token, actor=request.user, request=request)
            for token in queryset.select_related("user")
        )
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "submissions_per_minute",
        "max_active",
        "max_timeout_s",
        "max_memory_mb",
        "max_cpus",
        "high_priority",
        "updated_at",
    )
    list_select_related = ("user", "group")
    raw_id_fields = ("user",)
    search_fields = ("user__username", "group__name")
    show_full_result_count = False
    fieldsets = (
        ("Applies to (exactly one)", {"fields": ("user", "group")}),
        ("Rate", {"fields": ("submissions_per_minute", "max_active")}),
        ("Largest limits a submission may ask for", {"fields": ("max_timeout_s", "max_memory_mb", "max_cpus")}),
        ("Priority", {"fields": ("high_priority",)}),
    )


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    """Who has a webhook secret and since when; never the secret (its owner makes a new one through the API)."""

    list_display = ("user", "created_at")
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    show_full_result_count = False
    fields = ("user", "created_at")
    readonly_fields = ("user", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
