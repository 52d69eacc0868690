"""Sessions: long-lived agent sandboxes, one ``Session`` row each, and their transcript of ``Step`` rows.

A session's status changes only through the named methods on ``Session`` (``claim``, ``mark_ready``,
``end``): conditional UPDATEs naming the statuses they may leave, so a host, the API and the
reconciler racing on one row never both win, and ``ended`` never changes again. Steps are numbered
``seq`` 1, 2, 3 … per session by one atomic UPDATE of ``step_count``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from apps.accounts.roles import is_operator


class Status(models.TextChoices):
    STARTING = "starting"
    READY = "ready"
    ENDED = "ended"


LIVE_STATUSES = (Status.STARTING, Status.READY)


class EndReason(models.TextChoices):
    """Why a session ended, for machines; ``error`` says it for people."""

    DELETED = "deleted"  # its owner (or an operator) ended it
    IDLE_TIMEOUT = "idle_timeout"
    MAX_LIFETIME = "max_lifetime"
    STOPPED = "stopped"  # emergency stop
    KILL_SWITCH = "kill_switch"
    SAFETY_STOPPED = "safety_stopped"
    WORKER_LOST = "worker_lost"  # the session host serving it went away
    SANDBOX_EXITED = "sandbox_exited"  # its container stopped (everything in it was killed from inside, OOM …)
    ERROR = "error"  # the sandbox could not be set up as the policy requires (fail closed), or a platform fault


class StepKind(models.TextChoices):
    EXEC = "exec"
    WRITE_FILE = "write_file"
    READ_FILE = "read_file"


class StepStatus(models.TextChoices):
    RUNNING = "running"
    DONE = "done"


class SessionQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        return self if is_operator(user) else self.filter(owner=user)

    def live(self):
        return self.filter(status__in=LIVE_STATUSES)


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sandbox_sessions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True)
    error = models.TextField(blank=True)
    language = models.CharField(max_length=32, default="python")
    image = models.CharField(max_length=200)
    image_digest = models.CharField(max_length=100, blank=True)
    sandbox_runtime = models.CharField(max_length=32, blank=True)
    memory_mb = models.PositiveIntegerField()
    cpus = models.FloatField()
    idle_timeout_s = models.PositiveIntegerField()
    max_lifetime_s = models.PositiveIntegerField()
    metadata = models.JSONField(default=dict, blank=True)
    host = models.CharField(max_length=200, blank=True, help_text="The session host serving it.")
    container_id = models.CharField(max_length=64, blank=True)
    step_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(default=timezone.now)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "host"]),
        ]

    def __str__(self) -> str:
        return f"session {self.pk} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def expires_at(self):
        return self.created_at + timezone.timedelta(seconds=self.max_lifetime_s)

    def _transition(self, allowed_from, **changes) -> bool:
        changed = Session.objects.filter(pk=self.pk, status__in=list(allowed_from)).update(**changes) == 1
        self.refresh_from_db()
        return changed

    def claim(self, host: str) -> bool:
        """A starting session no host has taken yet -> this host's."""
        changed = Session.objects.filter(pk=self.pk, status=Status.STARTING, host="").update(host=host) == 1
        self.refresh_from_db()
        return changed

    def mark_ready(self, *, container_id: str, sandbox_runtime: str, image_digest: str) -> bool:
        """starting -> ready, once its sandbox and agent answer."""
        now = timezone.now()
        return self._transition(
            [Status.STARTING],
            status=Status.READY,
            ready_at=now,
            last_activity_at=now,
            container_id=container_id,
            sandbox_runtime=sandbox_runtime,
            image_digest=image_digest[:100],
        )

    def end(self, reason: EndReason, error: str = "") -> bool:
        """starting/ready -> ended, once; the first reason wins."""
        return self._transition(
            LIVE_STATUSES, status=Status.ENDED, end_reason=reason, error=error[:2000], ended_at=timezone.now()
        )

    def next_seq(self) -> int | None:
        """The next step number of a ready session, also marking it active now; None once it is not ready."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Session._meta.db_table} SET step_count = step_count + 1, last_activity_at = %s "  # noqa: S608
                "WHERE id = %s AND status = %s RETURNING step_count",
                [timezone.now(), self.pk, Status.READY],
            )
            row = cursor.fetchone()
        return row[0] if row else None


class Step(models.Model):
    """One exec or file operation in a session, as recorded by the host that performed it."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.RUNNING)
    cmd = models.JSONField(default=list, blank=True)
    cwd = models.CharField(max_length=4096, blank=True)
    env_names = models.JSONField(default=list, blank=True)
    user = models.CharField(max_length=64, blank=True)
    input_bytes = models.BigIntegerField(default=0)
    path = models.CharField(max_length=4096, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    returncode = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=32, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    timed_out = models.BooleanField(default=False)
    truncated = models.BooleanField(default=False)
    stdout = models.TextField(blank=True)
    stderr = models.TextField(blank=True)
    stdout_bytes = models.BigIntegerField(default=0)
    stderr_bytes = models.BigIntegerField(default=0)
    duration_ms = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="one_step_per_seq")]

    def __str__(self) -> str:
        return f"{self.session_id} #{self.seq} {self.kind}"
