from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.evaluations import progress as run_progress
from apps.evaluations.callbacks.targets import MAX_URL_LENGTH
from apps.evaluations.models import (
    Artifact,
    CallbackAttempt,
    CallbackDelivery,
    DeliveryStatus,
    Evaluation,
    Priority,
    Reason,
    TestResult,
)
from apps.monitoring.models import Incident


@extend_schema_field(serializers.ChoiceField(choices=Reason.choices, allow_null=True, read_only=True))
class ReasonField(serializers.Field):
    """Why the evaluation ended (machine-readable); null while it is queued or running."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("help_text", "Why it ended, machine-readable; null while queued or running.")
        super().__init__(**kwargs)

    def to_representation(self, value):
        return value or None


@extend_schema_field(serializers.URLField(allow_null=True, read_only=True))
class CallbackUrlField(serializers.Field):
    """Where the ``evaluation.finished`` callback goes; null when none was asked for."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("help_text", "Where the evaluation.finished callback is POSTed; null: none.")
        super().__init__(**kwargs)

    def to_representation(self, value):
        return value or None


class EvaluationSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    reason = ReasonField()
    callback_url = CallbackUrlField()
    batch = serializers.UUIDField(source="batch_id", read_only=True, allow_null=True)
    task = serializers.SerializerMethodField()
    rerun_of = serializers.SerializerMethodField()
    limits_requested = serializers.SerializerMethodField()
    limits = serializers.SerializerMethodField()
    incident = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "name",
            "labels",
            "status",
            "language",
            "priority",
            "owner",
            "metadata",
            "limits_requested",
            "limits",
            "reason",
            "exit_code",
            "signal",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "output_truncated",
            "output_bytes",
            "peak_memory_bytes",
            "cpu_time_ms",
            "code_sha256",
            "image_digest",
            "sandbox_runtime",
            "timeout_s",
            "memory_mb",
            "cpus",
            "callback_url",
            "batch",
            "task",
            "passed",
            "rerun_of",
            "incident",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_incident(self, obj) -> int | None:
        """The safety incident on this run, if any (its id: details under /api/v1/incidents/)."""
        if hasattr(obj, "incident_pk"):  # annotated by the list
            return obj.incident_pk
        return Incident.objects.filter(evaluation_id=obj.pk).values_list("pk", flat=True).first()

    def get_task(self, obj) -> str | None:
        return obj.task or None

    def get_rerun_of(self, obj) -> str | None:
        """The evaluation this one runs again ("Run again" records it in the metadata)."""
        return obj.rerun_of_id

    def get_limits_requested(self, obj) -> dict:
        return {"timeout_s": obj.timeout_s_requested, "memory_mb": obj.memory_mb_requested, "cpus": obj.cpus_requested}

    def get_limits(self, obj) -> dict:
        return {
            "timeout_s": obj.timeout_s,
            "memory_mb": obj.memory_mb,
            "cpus": obj.cpus,
            "pids": obj.pids_limit,
            "output_cap_bytes": obj.output_cap_bytes,
        }


class EvaluationDetailSerializer(EvaluationSerializer):
    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "code", "stdin", "files", "args", "env"]
        read_only_fields = fields


class EvaluationProgressSerializer(EvaluationDetailSerializer):
    """The detail as GET /evaluations/{id}/ returns it (and a callback posts it): with ``progress`` while unfinished."""

    progress = serializers.SerializerMethodField(
        help_text='queued: {"kind": "queued", "position", "queued_total", "running", "estimated_wait_s", '
        '"typical_run_s"}; running: {"kind": "running", "elapsed_s", "timeout_s", "output_bytes", '
        '"peak_memory_bytes", "memory_limit_bytes"}; null once it ended.',
    )

    class Meta(EvaluationDetailSerializer.Meta):
        fields = [*EvaluationDetailSerializer.Meta.fields, "progress"]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_progress(self, evaluation: Evaluation) -> dict | None:
        return run_progress.as_payload(run_progress.progress_of(evaluation))


class SubmissionSerializer(serializers.Serializer):
    """Documents the submission body for OpenAPI; validation itself is in evaluations.validation."""

    code = serializers.CharField()
    language = serializers.CharField(required=False, default="python")
    stdin = serializers.CharField(required=False, allow_blank=True)
    timeout_s = serializers.FloatField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    cpus = serializers.FloatField(required=False)
    priority = serializers.ChoiceField(
        Priority.choices,
        required=False,
        help_text="low or normal for everyone; high only for operators and users whose quota allows it (else 403).",
    )
    name = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="a name to tell this run apart (one line)"
    )
    labels = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=10,
        help_text="at most 10 labels, each a letter or digit then letters, digits and _ . : = / + @ - "
        "(e.g. model=gpt-4); filter the list with ?label=",
    )
    metadata = serializers.DictField(
        required=False,
        help_text="any JSON object up to 16 KiB and 64 levels; no NUL characters, lone surrogates or infinite numbers.",
    )
    files = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="more files next to the entry point (`code`): plain names (letters, digits, _ . -; no directories, "
        "no ..), at most SANDBOX_MAX_FILES; code and files count together in SANDBOX_MAX_CODE_BYTES.",
    )
    args = serializers.ListField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="the program's arguments, after the runtime's run command (argv: never through a shell).",
    )
    env = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="variables added to the program's environment; the platform's (PATH, HOME, LANG, CRUCIBLE_*), "
        "the runtime's own and LD_* cannot be set.",
    )
    callback_url = serializers.URLField(
        required=False,
        max_length=MAX_URL_LENGTH,
        help_text='http(s) URL that receives POST {"type": "evaluation.finished", "evaluation": {…detail…}} '
        "when it ends, signed with your webhook secret (X-Crucible-Signature: sha256=<hex HMAC-SHA256 of the raw "
        "body>). A host that resolves to a loopback, private or link-local address is a 400 unless the operator "
        "allows it (CALLBACK_ALLOWED_HOSTS).",
    )


class TestResultSerializer(serializers.ModelSerializer):
    """One test's verdict; ``detail`` only for those who may see the task's tests (else null)."""

    detail = serializers.SerializerMethodField()

    class Meta:
        model = TestResult
        fields = ["name", "category", "passed", "status", "duration_ms", "exit_code", "message", "detail"]
        read_only_fields = fields

    def get_detail(self, obj) -> str | None:
        return obj.detail if self.context.get("may_see_tests") else None


class ResultsSerializer(serializers.ModelSerializer):
    reason = ReasonField()
    tests = serializers.SerializerMethodField(help_text="Per-test verdicts when the evaluation has tests, else null.")

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "status",
            "reason",
            "exit_code",
            "signal",
            "error",
            "started_at",
            "finished_at",
            "duration_ms",
            "output_truncated",
            "output_bytes",
            "peak_memory_bytes",
            "cpu_time_ms",
            "image_digest",
            "sandbox_runtime",
            "passed",
            "tests",
        ]
        read_only_fields = fields

    @extend_schema_field(TestResultSerializer(many=True, allow_null=True))
    def get_tests(self, obj):
        if not obj.tests:
            return None
        return TestResultSerializer(obj.test_results.all(), many=True, context=self.context).data


class ArtifactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["name", "size", "sha256", "created_at"]
        read_only_fields = fields


class CallbackAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = CallbackAttempt
        fields = ["number", "started_at", "duration_ms", "address", "status_code", "error"]
        read_only_fields = fields


class CallbackDeliverySerializer(serializers.ModelSerializer):
    """One callback and every attempt to deliver it, oldest attempt first."""

    event = serializers.CharField(source="event_type", read_only=True)
    status = serializers.ChoiceField(DeliveryStatus.choices, read_only=True)
    attempt_log = CallbackAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = CallbackDelivery
        fields = [
            "id",
            "event",
            "url",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "attempt_log",
        ]
        read_only_fields = fields
