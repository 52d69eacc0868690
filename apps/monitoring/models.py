"""What monitoring keeps about runs: resource samples, platform timings, safety rules and the alerts they raise."""

from __future__ import annotations

import re
from typing import TypedDict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone


class SamplePayload(TypedDict):
    """A resource sample as the WebSocket, the samples API and the resource graph see it."""

    at: str
    cpu_percent: float
    memory_bytes: int
    pids: int
    output_bytes_per_s: float
    processes: dict[str, int] | None


class AlertPayload(TypedDict):
    """An alert as the WebSockets and the webhook see it (text only: evidence came from the sandbox)."""

    id: int
    rule: str
    kind: str
    severity: str
    action: str
    message: str
    evidence: str
    evaluation_id: str | None
    session_id: str | None
    created_at: str


# --- Resource samples ----------------------------------------------------------------------
# Evaluations are referenced by UUID, not by foreign key: monitoring sits below evaluations and
# knows nothing of it (evaluations imports monitoring, never the other way round), and samples
# and alerts must be cheap to write from the worker's run loop.


class ResourceSample(models.Model):
    """One reading of a running evaluation's container, about once a second."""

    evaluation_id = models.UUIDField(db_index=False)
    at = models.DateTimeField()
    cpu_percent = models.FloatField()
    memory_bytes = models.BigIntegerField()
    pids = models.IntegerField()
    output_bytes_per_s = models.FloatField(default=0)
    processes = models.JSONField(
        null=True, blank=True, help_text="The process view when it was read: how many processes of each name."
    )

    class Meta:
        ordering = ["evaluation_id", "at"]
        indexes = [models.Index(fields=["evaluation_id", "at"])]

    def __str__(self) -> str:
        return f"{self.evaluation_id} @ {self.at:%H:%M:%S}"

    def as_message(self) -> SamplePayload:
        """The WebSocket/JSON shape of a sample (also what the resource graph reads)."""
        return {
            "at": self.at.isoformat(),
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "pids": self.pids,
            "output_bytes_per_s": round(self.output_bytes_per_s, 1),
            "processes": self.processes,
        }


class RunTiming(models.Model):
    """Platform-side timings of one run that the Evaluation row does not keep (for metrics)."""

    evaluation_id = models.UUIDField(unique=True)
    sandbox_start_ms = models.IntegerField(
        help_text="From the start of the run to the sandbox ready to run the program."
    )
    warm = models.BooleanField(default=False, help_text="The sandbox came from a worker's warm pool.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.evaluation_id}: sandbox start {self.sandbox_start_ms} ms"

    @classmethod
    def record(cls, evaluation_id, sandbox_start_ms: int, warm: bool) -> None:
        """Store a run's timing; a retried run's second attempt replaces the first's. One INSERT ... ON
        CONFLICT as written here: the ORM's (``bulk_create`` with ``update_conflicts``) cost a worker
        about 1 ms of CPU per run to build."""
        with connection.cursor() as cursor:
            cursor.execute(_RECORD_TIMING_SQL, [evaluation_id, sandbox_start_ms, warm, timezone.now()])


_RECORD_TIMING_SQL = """
INSERT INTO monitoring_runtiming (evaluation_id, sandbox_start_ms, warm, created_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (evaluation_id) DO UPDATE SET sandbox_start_ms = EXCLUDED.sandbox_start_ms, warm = EXCLUDED.warm
"""


# --- Safety rules and alerts -----------------------------------------------------------------


class Severity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class RuleKind(models.TextChoices):
    MEMORY_NEAR_LIMIT = "memory_near_limit", "Memory near its limit (threshold: fraction of the limit)"
    PIDS_NEAR_LIMIT = "pids_near_limit", "Processes near the pids limit, e.g. a fork bomb (threshold: fraction)"
    OUTPUT_FLOOD = "output_flood", "Sustained output flood (threshold: bytes/s for at least duration_s)"
    CPU_PINNED = "cpu_pinned", "CPU pinned for the whole run (threshold: fraction of the CPUs, after duration_s)"
    OUTPUT_PATTERN = "output_pattern", "Output matches a regular expression (pattern)"
    PROCESS_NAME = "process_name", "A process in the sandbox has a name matching a regular expression (pattern)"


class RuleAction(models.TextChoices):
    ALERT = "alert"
    STOP = "stop", "alert and stop the evaluation (safety_stopped)"


class SafetyRule(models.Model):
    """An operator-configured check run on every evaluation's samples or output."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=RuleKind.choices)
    threshold = models.FloatField(default=0, help_text="Meaning depends on the kind (see the kind's description).")
    duration_s = models.FloatField(default=0, help_text="How long the condition must hold (flood, CPU pinned).")
    pattern = models.CharField(max_length=500, blank=True, help_text="Python regular expression (output_pattern).")
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    action = models.CharField(max_length=8, choices=RuleAction.choices, default=RuleAction.ALERT)
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.kind in (RuleKind.OUTPUT_PATTERN, RuleKind.PROCESS_NAME):
            if not self.pattern:
                raise ValidationError({"pattern": f"An {self.kind} rule needs a pattern."})
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValidationError({"pattern": f"Not a valid regular expression: {exc}"})
        elif self.kind in (RuleKind.MEMORY_NEAR_LIMIT, RuleKind.PIDS_NEAR_LIMIT, RuleKind.CPU_PINNED):
            if not 0 < self.threshold <= 1:
                raise ValidationError({"threshold": "A fraction in (0, 1]."})
        elif self.kind == RuleKind.OUTPUT_FLOOD and self.threshold <= 0:
            raise ValidationError({"threshold": "Bytes per second, more than 0."})
        if self.duration_s < 0:
            raise ValidationError({"duration_s": "Not negative."})


class AlertQuerySet(models.QuerySet):
    def unacknowledged(self):
        return self.filter(acknowledged_at__isnull=True)


class Alert(models.Model):
    """A rule fired (or an operator pulled the emergency stop) on one evaluation. Raised once per rule per run."""

    evaluation_id = models.UUIDField(null=True, blank=True, db_index=True)
    session_id = models.UUIDField(null=True, blank=True, db_index=True)  # an agent session's (apps.sessions)
    rule = models.ForeignKey(SafetyRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    rule_name = models.CharField(max_length=64, db_index=True)  # kept if the rule is deleted; "emergency_stop" …
    kind = models.CharField(max_length=32, blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    action = models.CharField(max_length=8, choices=RuleAction.choices, default=RuleAction.ALERT)
    message = models.CharField(max_length=300)
    evidence = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation_id", "rule_name"], name="alert_once_per_rule_per_run"),
            models.UniqueConstraint(fields=["session_id", "rule_name"], name="alert_once_per_rule_per_session"),
        ]
        indexes = [models.Index(fields=["acknowledged_at", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.severity} {self.rule_name} on {self.evaluation_id}"

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def as_message(self) -> AlertPayload:
        """What goes out on the WebSocket and to the webhook (text only: evidence came from the sandbox)."""
        return {
            "id": self.pk,
            "rule": self.rule_name,
            "kind": self.kind,
            "severity": self.severity,
            "action": self.action,
            "message": self.message,
            "evidence": self.evidence,
            "evaluation_id": str(self.evaluation_id) if self.evaluation_id else None,
            "session_id": str(self.session_id) if self.session_id else None,
            "created_at": self.created_at.isoformat(),
        }


# --- Incidents -----------------------------------------------------------------------------
# One record a reviewer works from when a run or a session was stopped for safety: the alerts, who
# acted, a timeline, the evidence kept (artifact hashes, samples up to the kill) and its status.
# Like samples and alerts it names its run by UUID: evaluations and sessions (layer 3) open it.


class IncidentStatus(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FALSE_POSITIVE = "false_positive"


# Statuses under which the run's artifacts and files stay quarantined (until an operator releases them).
ACTIVE_INCIDENT_STATUSES = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED)
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class EventKind(models.TextChoices):
    OPENED = "opened"
    ALERT = "alert"
    STOP_REQUESTED = "stop_requested"
    CONTAINER_FROZEN = "container_frozen"
    CONTAINER_KILLED = "container_killed"
    EVIDENCE_COLLECTED = "evidence_collected"
    STATUS_CHANGED = "status_changed"
    QUARANTINE_RELEASED = "quarantine_released"
    QUARANTINED_DOWNLOAD = "quarantined_download"


class Incident(models.Model):
    """A safety incident on one evaluation or one agent session (never both): at most one per run."""

    evaluation_id = models.UUIDField(null=True, blank=True, unique=True)
    session_id = models.UUIDField(null=True, blank=True, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents"
    )
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.CRITICAL)
    status = models.CharField(max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    summary = models.CharField(max_length=300, blank=True)
    actor = models.CharField(
        max_length=150, blank=True, help_text="Who or what opened it: a rule, a user, the kill switch."
    )
    alerts = models.ManyToManyField(Alert, blank=True, related_name="incidents")
    opened_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status_comment = models.TextField(blank=True, help_text="The reviewer's last comment (operators only).")
    released_at = models.DateTimeField(null=True, blank=True, help_text="An operator released the quarantine.")
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    evidence = models.JSONField(
        default=dict,
        blank=True,
        help_text="What was kept at the stop: artifacts (name, size, sha256), samples, processes, output excerpt.",
    )

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(evaluation_id__isnull=False) ^ models.Q(session_id__isnull=False),
                name="incident_of_a_run_or_a_session",
            )
        ]
        indexes = [models.Index(fields=["status", "-opened_at"])]

    def __str__(self) -> str:
        return f"incident {self.pk} ({self.status}) on {self.evaluation_id or self.session_id}"

    @property
    def quarantined(self) -> bool:
        """The run's artifacts and files are kept from its owner: the incident is active and not released."""
        return self.status in ACTIVE_INCIDENT_STATUSES and self.released_at is None


class IncidentEvent(models.Model):
    """One line of an incident's timeline. ``internal`` lines (reviewers' comments) are for operators only."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=24, choices=EventKind.choices)
    actor = models.CharField(max_length=150, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    internal = models.BooleanField(default=False)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.kind} {self.detail[:40]}"


class IncidentFile(models.Model):
    """A file kept as evidence when a session was stopped (a run's are its artifacts): hostile bytes,
    served only to operators, as a download, audited."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()

    class Meta:
        ordering = ["incident", "name"]
        constraints = [models.UniqueConstraint(fields=["incident", "name"], name="incident_file_unique_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes) of incident {self.incident_id}"
