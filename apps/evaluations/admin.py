"""Operators' admin: fast on big tables (no full counts, select_related, raw ids)."""

import logging

from django.contrib import admin, messages

from apps.evaluations import builds, services
from apps.evaluations.models import Artifact, CallbackAttempt, CallbackDelivery, Evaluation, OutputChunk, Runtime
from apps.evaluations.validation import SubmissionInvalid, SubmissionTooLarge

log = logging.getLogger(__name__)

# What ``services.submit`` refuses with a message meant for people.
SUBMIT_REFUSALS = (
    SubmissionInvalid,
    SubmissionTooLarge,
    services.Throttled,
    services.PriorityNotAllowed,
    services.IdempotencyConflict,
)


@admin.register(Runtime)
class RuntimeAdmin(admin.ModelAdmin):
    list_display = ["name", "image", "command", "file_name", "enabled", "image_build"]
    list_editable = ["enabled"]
    list_select_related = ["build"]
    actions = ["build_image"]

    @admin.display(description="image build")
    def image_build(self, runtime: Runtime) -> str:
        build = getattr(runtime, "build", None)
        if build is None:
            return "—"
        elapsed = f", {build.elapsed_s} s" if build.elapsed_s is not None else ""
        return f"{build.get_status_display()} ({build.phase}{elapsed})"

    @admin.action(description="Build the image in the background (again, after a failure)")
    def build_image(self, request, queryset):
        for runtime in queryset:
            try:
                build = builds.request(
                    runtime, by=request.user.get_username(), again=True, actor=request.user, http_request=request
                )
            except builds.BuildRefused as exc:
                messages.error(request, exc.message)
                continue
            messages.success(request, f"{runtime.name}: build {build.get_status_display().lower()}.")


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "language", "status", "exit_code", "created_at", "duration_ms"]
    list_filter = ["status", "language", "priority"]
    search_fields = ["=id", "owner__username", "code_sha256"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    actions = ["cancel_selected", "stop_selected", "run_again"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the record is kept; cancel or stop instead

    @admin.action(description="Cancel selected evaluations")
    def cancel_selected(self, request, queryset):
        for evaluation in queryset:
            services.cancel(evaluation, actor=request.user, request=request)
        messages.success(request, f"Cancel requested for {len(queryset)} evaluation(s).")

    @admin.action(description="Emergency stop selected evaluations")
    def stop_selected(self, request, queryset):
        for evaluation in queryset:
            services.stop(evaluation, actor=request.user, request=request)
        messages.success(request, f"Stop requested for {len(queryset)} evaluation(s).")

    @admin.action(description="Run again (same code and limits, as the operator)")
    def run_again(self, request, queryset):
        count = 0
        for evaluation in queryset:
            try:
                services.submit(request.user, services.resubmission_body(evaluation), request=request)
                count += 1
            except SUBMIT_REFUSALS as exc:
                messages.error(request, f"{evaluation.pk}: {getattr(exc, 'message', exc)}")
            except Exception:
                # Internal text (a database message, a traceback) goes to the log, not onto the page.
                log.exception("run again of %s failed", evaluation.pk)
                messages.error(request, f"{evaluation.pk}: could not be submitted again (the error is logged).")
        messages.success(request, f"Submitted {count} evaluation(s) again.")


@admin.register(OutputChunk)
class OutputChunkAdmin(admin.ModelAdmin):
    list_display = ["evaluation", "seq", "stream", "created_at"]
    raw_id_fields = ["evaluation"]
    show_full_result_count = False
    readonly_fields = ["evaluation", "seq", "stream", "data", "created_at"]


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["evaluation", "name", "size", "sha256"]
    raw_id_fields = ["evaluation"]
    show_full_result_count = False
    exclude = ["data"]
    readonly_fields = ["evaluation", "name", "size", "sha256", "created_at"]


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ["number", "started_at", "duration_ms", "address", "status_code", "error"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(admin.ModelAdmin):
    """Completion callbacks and their attempts, read-only (the body is not shown: it holds the owner's code)."""

    list_display = ["event_type", "subject_id", "owner", "status", "attempts", "last_status_code", "created_at"]
    list_filter = ["status", "event_type"]
    search_fields = ["=subject_id", "=id", "owner__username", "url"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    show_full_result_count = False
    exclude = ["body"]
    readonly_fields = [f.name for f in CallbackDelivery._meta.fields if f.name != "body"]
    inlines = [CallbackAttemptInline]

    def has_add_permission(self, request):
        return False
