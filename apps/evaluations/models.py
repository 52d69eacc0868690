"""The domain: one Evaluation row per run, its ordered output chunks, its artifacts, the runtimes.

Status changes only through the named methods on Evaluation (claim, finish, cancel, …). Each is a
conditional UPDATE that names the statuses it may leave, so two processes racing on one row can
never both win, and a terminal status never changes again.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from apps.accounts.roles import is_operator
from apps.sandboxing.image import BuildPhase
from apps.sandboxing.policy import Runtime as SandboxRuntime


class Status(models.TextChoices):
    """Each status with the label people read (the same on every page)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    OOM_KILLED = "oom_killed", "OOM killed"
    CANCELLED = "cancelled", "Cancelled"
    STOPPED = "stopped", "Stopped"
    SAFETY_STOPPED = "safety_stopped", "Safety stopped"
    ERROR = "error", "Error"


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
TERMINAL_STATUSES = tuple(s for s in Status if s not in ACTIVE_STATUSES)


class Reason(models.TextChoices):
    """Why an evaluation ended, for machines; ``error`` says it for people. Set by every terminal transition."""

    EXIT = "exit"  # the program ended by itself; ``exit_code`` says how
    TIMEOUT = "timeout"  # the wall-clock limit ran out
    OOM = "oom"  # the kernel killed it at its memory limit
    OUTPUT_CAP = "output_cap"  # it wrote more than the output cap and was stopped (no exit code)
    CANCELLED = "cancelled"  # a user cancelled it
    STOPPED = "stopped"  # an emergency stop (a user, an operator or the kill switch)
    SAFETY_RULE = "safety_rule"  # a safety rule stopped it
    WORKER_LOST = "worker_lost"  # the worker running it died or shut down, and it was not run again
    ENGINE_ERROR = "engine_error"  # the platform could not run it (engine, sandbox set-up, runtime)
    TESTS_FAILED = "tests_failed"  # it ran under each of its task's tests and at least one did not pass
    COMPILE_ERROR = "compile_error"  # a compiled language's compiler refused the code: it never ran


# The reason a terminal status implies when the transition names none.
REASON_FOR_STATUS = {
    Status.SUCCEEDED: Reason.EXIT,
    Status.FAILED: Reason.EXIT,
    Status.TIMED_OUT: Reason.TIMEOUT,
    Status.OOM_KILLED: Reason.OOM,
    Status.CANCELLED: Reason.CANCELLED,
    Status.STOPPED: Reason.STOPPED,
    Status.SAFETY_STOPPED: Reason.SAFETY_RULE,
    Status.ERROR: Reason.ENGINE_ERROR,
}


class Priority(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


# settings.RQ_QUEUES names the queues, most urgent first; a priority picks one of them.
QUEUE_FOR_PRIORITY = dict(zip((Priority.HIGH, Priority.NORMAL, Priority.LOW), settings.RQ_QUEUES, strict=True))


class Runtime(models.Model):
    """A language the sandbox can run: data, so operators add languages in the admin."""

    name = models.SlugField(max_length=32, unique=True)
    image = models.CharField(max_length=200, blank=True, help_text="Docker image; empty means SANDBOX_IMAGE.")
    command = models.JSONField(help_text='argv; "{file}" is replaced by the code file path, e.g. ["python3", "{file}"]')
    file_name = models.CharField(max_length=64)
    enabled = models.BooleanField(default=True)
    compile_command = models.JSONField(
        default=list, blank=True, help_text='argv of the compile step; empty: not compiled. "{build}" is /build.'
    )
    compile_timeout_s = models.FloatField(default=30.0, help_text="wall-clock limit of the compile step")
    compile_memory_mb = models.PositiveIntegerField(
        default=512, help_text="memory limit of the compile step (the program keeps its own)"
    )
    environment = models.JSONField(default=dict, blank=True, help_text="the runtime's own variables (upper case)")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def compiled(self) -> bool:
        return bool(self.compile_command)

    def to_sandbox(self) -> SandboxRuntime:
        return SandboxRuntime(
            image=self.image or settings.SANDBOX_IMAGE,
            command=list(self.command),
            file_name=self.file_name,
            compile_command=list(self.compile_command or []),
            compile_timeout_s=self.compile_timeout_s,
            compile_memory_mb=self.compile_memory_mb,
            environment=dict(self.environment or {}),
        )


class BuildStatus(models.TextChoices):
    """Where the build of a runtime's image stands (``apps.evaluations.builds``)."""

    QUEUED = "queued", "Queued"  # requested; on the builds queue, no builder has it yet
    BUILDING = "building", "Building"  # a builder holds the claim and beats its heartbeat
    SUCCEEDED = "succeeded", "Built"
    FAILED = "failed", "Failed"  # stays failed until an operator builds it again


class RuntimeBuild(models.Model):
    """The one build record of a runtime's image: at most one build of it at a time, anywhere.

    Every change is a conditional UPDATE (see ``apps.evaluations.builds``): a builder claims a
    ``queued`` row, or a ``building`` row whose heartbeat went stale (its builder died), and
    writes only while its ``claim`` token is the row's."""

    runtime = models.OneToOneField(Runtime, on_delete=models.CASCADE, related_name="build")
    image = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=BuildStatus.choices, default=BuildStatus.QUEUED)
    phase = models.CharField(
        max_length=16, choices=[(p.value, p.value) for p in BuildPhase], default=BuildPhase.WAITING
    )
    claim = models.UUIDField(null=True, blank=True)  # the token of the builder that holds it
    builder = models.CharField(max_length=200, blank=True, default="")
    attempts = models.IntegerField(default=0)
    requested_at = models.DateTimeField(default=timezone.now)
    requested_by = models.CharField(max_length=150, blank=True, default="")  # a user name, or "submission"
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    log_tail = models.TextField(blank=True, default="")  # the last lines of the build's log, bounded
    error = models.TextField(blank=True, default="")  # why it failed, for people
    image_id = models.CharField(max_length=100, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.image} ({self.status})"

    @property
    def elapsed_s(self) -> int | None:
        """Seconds since the build started (to its end once it ended); None before it started."""
        if self.started_at is None:
            return None
        return int(((self.finished_at or timezone.now()) - self.started_at).total_seconds())


class Control(models.TextChoices):
    """What a user or the platform asked the worker to do with a running evaluation."""

    CANCEL = "cancel"
    STOP = "stop"
    SAFETY_STOP = "safety_stop"


# How a run ends when the worker acts on a request.
STATUS_FOR_CONTROL = {
    Control.CANCEL: Status.CANCELLED,
    Control.STOP: Status.STOPPED,
    Control.SAFETY_STOP: Status.SAFETY_STOPPED,
}


SHORT_ID_MIN = 8  # the pages show the first 8 characters of an id


class AmbiguousId(Exception):
    """A short id that more than one visible evaluation starts with (a 400 that says to give more)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.message = f"More than one evaluation's id starts with {prefix!r}; give more characters of it."
        super().__init__(self.message)


class EvaluationQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        return self if is_operator(user) else self.filter(owner=user)

    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def by_id(self, raw: str) -> Evaluation:
        """The one evaluation of this queryset whose id is ``raw`` or starts with it (a short id as the
        pages show it, at least SHORT_ID_MIN characters). Raises ``Evaluation.DoesNotExist`` or
        ``AmbiguousId``."""
        text = str(raw).strip().lower()
        try:
            return self.get(pk=uuid.UUID(text))
        except ValueError:
            pass
        if len(text) < SHORT_ID_MIN or any(c not in "0123456789abcdef-" for c in text):
            raise Evaluation.DoesNotExist
        found = list(self.filter(id__startswith=text).order_by("-created_at")[:2])
        if not found:
            raise Evaluation.DoesNotExist
        if len(found) > 1:
            raise AmbiguousId(text)
        return found[0]

    def search(self, q: str):
        """Match ``q`` against the id (a hex prefix of 4+ characters), language, code and metadata text."""
        q = (q or "").strip()[:200]
        if not q:
            return self
        match = (
            models.Q(language__iexact=q)
            | models.Q(name__icontains=q)
            | models.Q(labels__icontains=q)
            | models.Q(code__icontains=q)
            | models.Q(metadata__icontains=q)
        )
        if len(q) >= 4 and all(c in "0123456789abcdef-" for c in q.lower()):
            match |= models.Q(id__startswith=q.lower())
        return self.filter(match)


# ``Evaluation.claim``: the compare-and-set of a claim, returning where the output of earlier attempts ends.
_CLAIM_SQL = """
UPDATE evaluations_evaluation
   SET status = %s, worker = %s, started_at = %s, heartbeat_at = %s, attempts = attempts + 1
 WHERE id = %s AND status = %s AND attempts = %s
RETURNING (SELECT coalesce(max(seq), 0) FROM evaluations_outputchunk WHERE evaluation_id = %s)
"""


class Evaluation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="evaluations")
    code = models.TextField()
    code_sha256 = models.CharField(max_length=64, db_index=True)
    language = models.CharField(max_length=32)
    stdin = models.TextField(blank=True, default="")
    files = models.JSONField(default=dict, blank=True)  # name -> content, besides the entry point (``code``)
    args = models.JSONField(default=list, blank=True)  # the program's arguments (argv, never a shell)
    env = models.JSONField(default=dict, blank=True)  # variables added to the program's environment
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    metadata = models.JSONField(default=dict, blank=True)
    # A person's way to tell runs apart: optional, shown in the list and the detail header, filterable.
    name = models.CharField(max_length=100, blank=True, default="")
    labels = models.JSONField(default=list, blank=True)  # short strings, see validation.parse_labels
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    # Where the ``evaluation.finished`` callback is POSTed when it ends (empty: none); see callbacks/.
    callback_url = models.CharField(max_length=2000, blank=True, default="")

    # Limits as asked (null: not asked, the default applied) and as applied.
    timeout_s_requested = models.FloatField(null=True, blank=True)
    memory_mb_requested = models.IntegerField(null=True, blank=True)
    cpus_requested = models.FloatField(null=True, blank=True)
    timeout_s = models.FloatField()
    memory_mb = models.IntegerField()
    cpus = models.FloatField()
    pids_limit = models.IntegerField()
    output_cap_bytes = models.BigIntegerField()

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    control = models.CharField(max_length=16, choices=Control.choices, blank=True, default="")
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True, default="")
    output_truncated = models.BooleanField(default=False)
    output_bytes = models.BigIntegerField(default=0)
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True)
    cpu_time_ms = models.BigIntegerField(null=True, blank=True)
    image_digest = models.CharField(max_length=100, blank=True, default="")
    # The engine runtime the sandbox actually ran under (runc or runsc); empty until it started.
    sandbox_runtime = models.CharField(max_length=16, blank=True, default="")
    attempts = models.IntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    # A sample scored against a task (apps.tasks): the batch it belongs to, the task (slug and
    # version), and the task's tests as they were at submission, run one after another after the
    # program (``apps.evaluations.testing``). ``tests`` is never shown through the evaluation; with
    # ``tests_hidden`` (the owner may not see the task's tests) neither is the output produced under them.
    batch_id = models.UUIDField(null=True, blank=True, db_index=True)
    task = models.CharField(max_length=200, blank=True, default="")
    task_version = models.IntegerField(null=True, blank=True)
    tests = models.JSONField(default=list, blank=True)
    tests_hidden = models.BooleanField(default=False)
    passed = models.BooleanField(null=True, blank=True)  # every test passed; null without tests or before the end
    # Queued but not on a work queue yet: released a few at a time per owner (``apps.evaluations.dispatch``).
    held = models.BooleanField(default=False)
    # Queued but not on a work queue: its runtime's image is being built (``apps.evaluations.builds``);
    # released onto its queue when the build succeeds, ended ``error`` when it fails.
    awaiting_runtime = models.BooleanField(default=False)
    # ``reuse: "batch"``: the sandbox may be one an earlier sample of the same batch used (reset and
    # verified clean in between, see ``runner.run_programs``), and may be kept for the next one.
    sandbox_reuse = models.BooleanField(default=False)

    objects = EvaluationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["owner", "created_at"], condition=models.Q(held=True), name="evaluation_held"),
            # The runs waiting on a work queue (dispatch's release asks whether any waits): few, however many are held.
            models.Index(
                fields=["created_at"], condition=models.Q(status="queued", held=False), name="evaluation_released"
            ),
            models.Index(
                fields=["language", "created_at"],
                condition=models.Q(awaiting_runtime=True),
                name="evaluation_awaiting_runtime",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="evaluation_unique_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def short_id(self) -> str:
        return str(self.pk)[:SHORT_ID_MIN]

    @property
    def rerun_of_id(self) -> str | None:
        """The evaluation this one runs again ("Run again" records it in the metadata), or None."""
        value = self.metadata.get("rerun_of") if isinstance(self.metadata, dict) else None
        try:
            return str(uuid.UUID(str(value))) if value else None
        except ValueError:
            return None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def queue_name(self) -> str:
        return QUEUE_FOR_PRIORITY[Priority(self.priority)]

    # --- Transitions -------------------------------------------------------------------
    # Each returns True when this call made the change, False when the row was no longer in a
    # status it may leave (someone else got there first). The instance holds the row's values either way.

    def _transition(self, allowed_from, *, attempt: int | None = None, **changes) -> bool:
        # ``attempt`` fences a worker's writes to its own claim: once the row was handed to another
        # attempt (requeued and claimed again), the old worker's late writes match nothing.
        rows = Evaluation.objects.filter(pk=self.pk, status__in=list(allowed_from))
        if attempt is not None:
            rows = rows.filter(attempts=attempt)
        changed = rows.update(**changes) == 1
        if not changed:
            self.refresh_from_db()  # someone else got there first: what the row holds now
            return False
        # This call wrote ``changes``: they are set here as written, and only what the database
        # computed (``F()`` expressions) is read back, not the whole row (its code and tests
        # included) at every claim and end.
        computed = [name for name, value in changes.items() if hasattr(value, "resolve_expression")]
        for name, value in changes.items():
            if name not in computed:
                setattr(self, name, value)
        if computed:
            self.refresh_from_db(fields=computed)
        return True

    last_seq: int | None = None  # not a column: the last seq of earlier attempts' output, read by ``claim``

    def claim(self, worker: str) -> bool:
        """queued -> running, for exactly one worker. The attempt count goes up from the one this
        instance holds, which the row must still hold (compare and set). The same statement reads
        the last ``seq`` of the output an earlier attempt left (``last_seq``, 0 for none): a claim is
        one round trip, and the run's recorder numbers its output on from there."""
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL, [Status.RUNNING, worker, now, now, self.pk, Status.QUEUED, self.attempts, self.pk]
            )
            claimed = cursor.fetchone()
        if claimed is None:
            self.refresh_from_db()  # someone else got there first: what the row holds now
            return False
        self.status, self.worker, self.started_at, self.heartbeat_at = Status.RUNNING, worker, now, now
        self.attempts += 1
        self.last_seq = claimed[0]
        return True

    def hand_back(self, attempt: int) -> bool:
        """running -> queued, as if attempt ``attempt`` had never claimed it (nothing ran: the engine
        could not be reached to start its sandbox)."""
        return self._transition(
            [Status.RUNNING],
            attempt=attempt,
            status=Status.QUEUED,
            worker="",
            started_at=None,
            heartbeat_at=None,
            attempts=models.F("attempts") - 1,
        )

    def finish(self, status: Status, *, reason: Reason | None = None, attempt: int | None = None, **fields) -> bool:
        """running -> a terminal status, with the run's record (exit code, timings, peaks …).

        ``reason`` defaults to the one the status implies (``REASON_FOR_STATUS``)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status} is not a terminal status")
        now = timezone.now()
        fields.setdefault("finished_at", now)
        if "duration_ms" not in fields and self.started_at:
            fields["duration_ms"] = int((fields["finished_at"] - self.started_at).total_seconds() * 1000)
        reason = reason or REASON_FOR_STATUS[status]
        return self._transition([Status.RUNNING], attempt=attempt, status=status, reason=reason, **fields)

    def end_queued(self, status: Status, control: Control) -> bool:
        """queued -> cancelled, stopped or safety_stopped: it never starts."""
        if status not in (Status.CANCELLED, Status.STOPPED, Status.SAFETY_STOPPED):
            raise ValueError(f"a queued evaluation cannot end as {status}")
        return self._transition(
            [Status.QUEUED],
            status=status,
            reason=REASON_FOR_STATUS[status],
            finished_at=timezone.now(),
            control=control,
        )

    def request_control(self, action: Control) -> bool:
        """Ask the worker running this evaluation to cancel or stop it. A stronger request wins."""
        weaker = {Control.CANCEL: [""], Control.STOP: ["", Control.CANCEL], Control.SAFETY_STOP: ["", Control.CANCEL]}[
            action
        ]
        changed = (
            Evaluation.objects.filter(pk=self.pk, status=Status.RUNNING, control__in=weaker).update(control=action) == 1
        )
        self.refresh_from_db()
        return changed

    def fail_with_error(
        self,
        error: str,
        from_statuses=ACTIVE_STATUSES,
        *,
        reason: Reason = Reason.ENGINE_ERROR,
        attempt: int | None = None,
    ) -> bool:
        """queued/running -> error, for platform faults (never user-code failures). ``error`` is for people."""
        return self._transition(
            from_statuses,
            attempt=attempt,
            status=Status.ERROR,
            reason=reason,
            error=error[:2000],
            finished_at=timezone.now(),
        )

    def requeue(self, *, attempt: int | None = None) -> bool:
        """running -> queued, when a platform fault interrupted the run and it may be retried once.

        Never while a cancel or stop is pending: the user's request wins over a retry."""
        changed = (
            Evaluation.objects.filter(pk=self.pk, status=Status.RUNNING, control="", **_attempt_filter(attempt)).update(
                status=Status.QUEUED, worker="", started_at=None, heartbeat_at=None
            )
            == 1
        )
        self.refresh_from_db()
        return changed


def _attempt_filter(attempt: int | None) -> dict:
    return {} if attempt is None else {"attempts": attempt}


class TestStatus(models.TextChoices):
    """How a sample did under one test."""

    __test__ = False  # not a pytest test class

    PASSED = "passed"
    FAILED = "failed"  # wrong output (io) or a non-zero exit (check)
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    OUTPUT_CAP = "output_cap"
    NOT_RUN = "not_run"  # the run ended (cancelled, stopped, a platform fault) before this test


class TestResult(models.Model):
    """One test's verdict on one evaluation, stored with the evaluation's end.

    ``message`` may be read by whoever sees the evaluation: it never holds a hidden test's code,
    input or expected output, nor text the program printed under a hidden test. ``detail`` (the
    differing line beside the expected one, the end of stderr) only by those who may see the tests.
    """

    __test__ = False  # not a pytest test class

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="test_results")
    position = models.IntegerField()
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=TestStatus.choices)
    passed = models.BooleanField()
    duration_ms = models.IntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    message = models.CharField(max_length=300, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["evaluation", "position"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "position"], name="test_result_unique_position")]

    def __str__(self) -> str:
        return f"{self.evaluation_id} {self.name}: {self.status}"


class Stream(models.TextChoices):
    STDOUT = "stdout"
    STDERR = "stderr"


class OutputChunk(models.Model):
    """A piece of the program's output, in order. Bytes are kept as they came (NUL, invalid UTF-8)."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="chunks")
    seq = models.IntegerField()
    stream = models.CharField(max_length=6, choices=Stream.choices)
    data = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["evaluation", "seq"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "seq"], name="chunk_unique_seq")]

    def __str__(self) -> str:
        return f"{self.evaluation_id} #{self.seq} {self.stream}"

    @property
    def text(self) -> str:
        """The bytes as text: invalid UTF-8 becomes U+FFFD; NUL becomes U+FFFD too (JSON/HTML safe)."""
        return bytes(self.data).decode("utf-8", errors="replace").replace("\x00", "\ufffd")


class Artifact(models.Model):
    """A file the program wrote to its output directory, collected safely after the run."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "name"], name="artifact_unique_name")]

    def __str__(self) -> str:
        return self.name


# --- Completion callbacks (apps/evaluations/callbacks) ---------------------------------------------


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # an attempt is due at ``next_attempt_at`` (or under way)
    DELIVERED = "delivered"  # an attempt got a 2xx
    FAILED = "failed"  # every attempt failed; nothing more is tried


class CallbackDelivery(models.Model):
    """One event to POST to one owner's URL (``evaluation.finished`` of one evaluation, …), with its attempts.

    Exactly one per (event, subject): scheduling the same event twice finds the first. ``body`` is the
    exact bytes sent (and signed) at every attempt. An attempt is claimed with a conditional UPDATE on
    ``attempts``, so two jobs for the same attempt never both send it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="callback_deliveries")
    event_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    url = models.CharField(max_length=2000)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.IntegerField(default=0)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "callback deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="callback_delivery_due")]
        constraints = [
            models.UniqueConstraint(fields=["event_type", "subject_id"], name="callback_delivery_once_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.subject_id} ({self.status})"


class CallbackAttempt(models.Model):
    """One try of a delivery: the HTTP status it got, or why it got none."""

    delivery = models.ForeignKey(CallbackDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.IntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.IntegerField()
    address = models.CharField(max_length=64, blank=True, default="")
    status_code = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="callback_attempt_unique_number")]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}: {self.status_code or self.error[:40]}"
