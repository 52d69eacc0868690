"""Tasks (what a sample of code is scored against, with hidden tests) and batches of samples.

A task is identified by its ``slug``; each edit of a task that a sample used makes a new ``version``
(the row with ``is_latest``), so a sample is always scored against the tests it was submitted
with. Every sample of a batch is an ``Evaluation`` (``batch_id``, ``task``, ``tests``), so its
logs, live view, cancel, stop, safety rules and audit are those of any evaluation.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.accounts.roles import is_operator
from apps.evaluations.models import Priority

SLUG_PATTERN = r"[a-z0-9][a-z0-9_./-]*"


class TaskQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Public tasks, the user's own, and every task for operators."""
        if not user.is_authenticated:
            return self.none()
        if is_operator(user):
            return self
        return self.filter(models.Q(public=True) | models.Q(owner=user))

    def latest(self):
        return self.filter(is_latest=True)

    def search(self, q: str):
        q = (q or "").strip()[:200]
        if not q:
            return self
        return self.filter(models.Q(slug__icontains=q) | models.Q(title__icontains=q) | models.Q(prompt__icontains=q))


class Task(models.Model):
    slug = models.CharField(max_length=200)
    version = models.IntegerField(default=1)
    is_latest = models.BooleanField(default=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="tasks")
    public = models.BooleanField(default=False)
    source = models.CharField(max_length=64, blank=True, default="", help_text="Where it came from, e.g. humaneval.")
    title = models.CharField(max_length=200)
    prompt = models.TextField(blank=True, default="", help_text="Markdown.")
    language = models.CharField(max_length=32)
    entry_point = models.CharField(max_length=200, blank=True, default="")
    timeout_s = models.FloatField()
    memory_mb = models.IntegerField()
    tests = models.JSONField(default=list)
    # The prompt in other languages than ``language`` (language: text), prepended to a sample in that
    # language when samples are completions (HumanEval-X / MultiPL-E style).
    prompts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["slug", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["slug", "version"], name="task_unique_version"),
            models.UniqueConstraint(fields=["slug"], condition=models.Q(is_latest=True), name="task_one_latest"),
        ]
        indexes = [models.Index(fields=["source", "slug"])]

    def __str__(self) -> str:
        return f"{self.slug} v{self.version}"

    def may_see_tests(self, user) -> bool:
        """Hidden tests (code, input, expected output) are for the task's owner and operators."""
        return user.is_authenticated and (user.pk == self.owner_id or is_operator(user))


class SamplesAre(models.TextChoices):
    PROGRAMS = "programs"  # each sample is the whole program
    COMPLETIONS = "completions"  # each sample completes the task's prompt (HumanEval style)


class Reuse(models.TextChoices):
    NONE = "none"  # a fresh sandbox for every sample
    BATCH = "batch"  # a sandbox may run several samples of the batch, reset and verified between them


class BatchStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class BatchQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        return self if is_operator(user) else self.filter(owner=user)


class Batch(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="batches")
    task = models.ForeignKey(Task, on_delete=models.PROTECT, null=True, blank=True, related_name="batches")
    samples_are = models.CharField(max_length=16, choices=SamplesAre.choices, default=SamplesAre.PROGRAMS)
    k = models.JSONField(default=list, blank=True)
    reuse = models.CharField(max_length=8, choices=Reuse.choices, default=Reuse.NONE)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    callback_url = models.CharField(max_length=2000, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # Stored once it is final; while samples wait or run it is read from them (``progress``).
    status = models.CharField(max_length=16, choices=BatchStatus.choices, default=BatchStatus.QUEUED)
    total = models.IntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in (BatchStatus.COMPLETED, BatchStatus.CANCELLED)
