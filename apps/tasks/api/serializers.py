from rest_framework import serializers

from apps.tasks.models import Batch, Task


class TaskSerializer(serializers.ModelSerializer):
    """A task; ``tests`` in full for its owner and operators, names and kinds only for everyone else."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    tests = serializers.SerializerMethodField()
    tests_count = serializers.SerializerMethodField()
    tests_visible = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "slug",
            "version",
            "title",
            "prompt",
            "prompts",
            "language",
            "entry_point",
            "timeout_s",
            "memory_mb",
            "public",
            "source",
            "owner",
            "created_at",
            "tests_count",
            "tests_visible",
            "tests",
        ]
        read_only_fields = fields

    def _may_see(self, obj) -> bool:
        request = self.context.get("request")
        return request is not None and obj.may_see_tests(request.user)

    def get_tests(self, obj) -> list[dict]:
        if self._may_see(obj):
            return obj.tests
        return [{"name": t["name"], "category": t.get("category", "functional"), "kind": t["kind"]} for t in obj.tests]

    def get_tests_count(self, obj) -> int:
        return len(obj.tests)

    def get_tests_visible(self, obj) -> bool:
        return self._may_see(obj)


class TaskBodySerializer(serializers.Serializer):
    """Documents the task body for OpenAPI; validation itself is in tasks.validation."""

    slug = serializers.CharField()
    title = serializers.CharField()
    prompt = serializers.CharField(required=False, help_text="Markdown.")
    language = serializers.CharField(required=False, default="python")
    prompts = serializers.DictField(
        child=serializers.CharField(), required=False, help_text="The prompt in other languages (language: text)."
    )
    entry_point = serializers.CharField(required=False)
    timeout_s = serializers.FloatField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    public = serializers.BooleanField(required=False, help_text="Operators only.")
    tests = serializers.ListField(
        child=serializers.DictField(),
        help_text='{"name","category":"functional"|"performance"|"chaos","kind":"io","stdin","expected_stdout",'
        '"match":"exact"|"strip"|"tokens"} or {"name","category","kind":"check","code"}',
    )


class BatchBodySerializer(serializers.Serializer):
    """Documents the batch body for OpenAPI; validation itself is in tasks.validation."""

    task = serializers.CharField(required=False, help_text="The default task of the samples (a slug).")
    samples = serializers.ListField(child=serializers.DictField(), help_text='[{"code", "task"?, "metadata"?}, …]')
    samples_are = serializers.ChoiceField(["programs", "completions"], required=False, default="programs")
    k = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False)
    priority = serializers.ChoiceField(["low", "normal", "high"], required=False)
    callback_url = serializers.URLField(required=False)
    metadata = serializers.DictField(required=False)
    timeout_s = serializers.FloatField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    reuse = serializers.ChoiceField(
        ["none", "batch"],
        required=False,
        default="none",
        help_text='"batch": a sandbox may run several samples of this batch one after another, reset and '
        "verified clean between them (see the README for what that isolates); default a fresh sandbox per sample.",
    )


class BatchSerializer(serializers.ModelSerializer):
    """A batch with its progress (``progress.summary``) merged in by the view."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    task = serializers.CharField(source="task.slug", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Batch
        fields = [
            "id",
            "owner",
            "task",
            "samples_are",
            "k",
            "reuse",
            "priority",
            "callback_url",
            "metadata",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class SampleTestSerializer(serializers.Serializer):
    name = serializers.CharField()
    category = serializers.CharField()
    passed = serializers.BooleanField()
    status = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    message = serializers.CharField(help_text="Never a hidden test's code, input or expected output.")
    detail = serializers.CharField(required=False, help_text="Only for the task's owner and operators.")


class SampleResultSerializer(serializers.Serializer):
    """One sample of a batch in its results (documents ``views.sample_result``)."""

    evaluation = serializers.UUIDField()
    sample = serializers.IntegerField(allow_null=True, help_text="Its index in the submitted samples.")
    task = serializers.CharField()
    task_version = serializers.IntegerField()
    status = serializers.CharField()
    reason = serializers.CharField(allow_null=True)
    passed = serializers.BooleanField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    tests = SampleTestSerializer(many=True)
