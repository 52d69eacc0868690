from rest_framework import serializers

from apps.evaluations.models import Artifact, Evaluation, Priority


class EvaluationSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    limits_requested = serializers.SerializerMethodField()
    limits = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "status",
            "language",
            "priority",
            "owner",
            "metadata",
            "limits_requested",
            "limits",
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
            "timeout_s",
            "memory_mb",
            "cpus",
        ]
        read_only_fields = fields

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
        fields = [*EvaluationSerializer.Meta.fields, "code", "stdin"]
        read_only_fields = fields


class SubmissionSerializer(serializers.Serializer):
    """Documents the submission body for OpenAPI; validation itself is in evaluations.validation."""

    code = serializers.CharField()
    language = serializers.CharField(required=False, default="python")
    stdin = serializers.CharField(required=False, allow_blank=True)
    timeout_s = serializers.FloatField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    cpus = serializers.FloatField(required=False)
    priority = serializers.ChoiceField(Priority.choices, required=False)
    metadata = serializers.DictField(required=False)


class ResultsSerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = [
            "id",
            "status",
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
        ]
        read_only_fields = fields


class ArtifactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["name", "size", "sha256", "created_at"]
        read_only_fields = fields
