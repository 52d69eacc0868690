"""Operators' admin for tasks and batches.

A task is created and edited here through the same services as the API (``services.create_task``,
``services.edit_task``), so the admin validates exactly as the API does and an edit of a version some
sample used becomes a new version instead of changing it in place. Earlier versions are read-only.
Batches are read-only; the one action cancels the selected batches (``services.cancel_batch``).
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages

from apps.tasks import services
from apps.tasks.models import Batch, Task
from apps.tasks.validation import TASK_FIELDS, TaskInvalid, parse_task


class TaskAdminForm(forms.ModelForm):
    """The task body, checked by ``validation.parse_task`` (each of its errors on its own field)."""

    tests = forms.JSONField(
        help_text='A list of {"name", "category", "kind": "io", "stdin", "expected_stdout", "match"} '
        'or {"name", "category", "kind": "check", "code"}.'
    )

    class Meta:
        model = Task
        fields = TASK_FIELDS

    def body(self) -> dict:
        body = {name: self.cleaned_data.get(name) for name in TASK_FIELDS if name in self.cleaned_data}
        if self.instance.pk:
            body.pop("slug", None)
        return body

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        current = services.body_of(self.instance) if self.instance.pk else None
        try:
            parse_task(self.body(), services.languages(), may_publish=True, partial_of=current)
            if current is None and Task.objects.filter(slug=cleaned.get("slug")).exists():
                raise TaskInvalid({"slug": ["A task with this slug exists; choose another or edit that one."]})
        except TaskInvalid as exc:
            for name, errors in exc.errors.items():
                field = name.split(".")[0].split("[")[0]
                self.add_error(field if field in self.fields else None, f"{name}: {' '.join(errors)}")
        return cleaned


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    form = TaskAdminForm
    list_display = ["slug", "version", "is_latest", "public", "source", "owner", "created_at"]
    list_filter = ["is_latest", "public", "source", "language"]
    search_fields = ["slug", "title", "owner__username"]
    list_select_related = ["owner"]
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        if not obj.is_latest:
            return [*TASK_FIELDS, "version", "owner", "created_at"]
        return ["slug", "version", "owner", "created_at"]

    def has_delete_permission(self, request, obj=None):
        return False  # batches and samples refer to tasks; publish a new version instead

    def save_model(self, request, obj, form, change):
        """Through the services: a new task, or an edit (a new version when a sample used this one)."""
        if change:
            saved = services.edit_task(Task.objects.get(pk=obj.pk), request.user, form.body(), request=request)
        else:
            saved = services.create_task(request.user, form.body(), request=request)
        obj.pk, obj.version, obj.is_latest = saved.pk, saved.version, saved.is_latest
        if saved.version > 1 and change:
            messages.info(request, f"Samples used the previous version, so the edit is version {saved.version}.")

    def save_related(self, request, form, formsets, change):
        pass  # a task has no related rows to save; the service saved everything

    def get_changeform_initial_data(self, request):
        return {
            "tests": [],
            "language": "python",
            "timeout_s": settings.SANDBOX_DEFAULT_TIMEOUT_S,
            "memory_mb": settings.SANDBOX_DEFAULT_MEMORY_MB,
        }


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "status", "total", "samples_are", "priority", "created_at", "finished_at"]
    list_filter = ["status", "samples_are", "priority"]
    search_fields = ["=id", "owner__username", "task__slug"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner", "task"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Batch._meta.fields]
    actions = ["cancel_selected"]

    def has_add_permission(self, request):
        return False  # submit batches through the API or `crucible batch submit`

    def has_delete_permission(self, request, obj=None):
        return False  # the record is kept; cancel instead

    @admin.action(description="Cancel selected batches", permissions=["change"])
    def cancel_selected(self, request, queryset):
        asked = sum(services.cancel_batch(batch, actor=request.user, request=request) for batch in queryset)
        messages.success(request, f"Cancelled {len(queryset)} batch(es): {asked} sample(s) asked to end.")
