"""The task form of the pages: the API's task body as fields, checked by the services as the API is."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings

from apps.tasks.validation import TaskInvalid

TESTS_HELP = (
    'A JSON list. io: {"name", "category", "kind": "io", "stdin", "expected_stdout", '
    '"match": "exact"|"strip"|"tokens"}; '
    'check: {"name", "category", "kind": "check", "code"} (run after the sample, passes on exit 0). '
    "category: functional, performance or chaos. Only you and operators see the tests' content."
)
TESTS_EXAMPLE = [{"name": "prints-4", "category": "functional", "kind": "io", "stdin": "", "expected_stdout": "4\n"}]


class TaskForm(forms.Form):
    slug = forms.CharField(max_length=200, help_text="Lowercase letters, digits and _ . / -, e.g. me/fizzbuzz.")
    title = forms.CharField(max_length=200, help_text="Shown in the catalogue.")
    prompt = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "class": "code-editor code-editor--small", "spellcheck": "false"}),
        help_text="Markdown. With samples submitted as completions it is prepended to each sample.",
    )
    language = forms.ChoiceField(initial="python")
    entry_point = forms.CharField(required=False, max_length=200, help_text="The function the tests call, if any.")
    timeout_s = forms.FloatField(label="Timeout (s)", initial=settings.SANDBOX_DEFAULT_TIMEOUT_S)
    memory_mb = forms.IntegerField(label="Memory (MB)", initial=settings.SANDBOX_DEFAULT_MEMORY_MB)
    tests = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "class": "code-editor", "spellcheck": "false"}),
        help_text=TESTS_HELP,
        initial=json.dumps(TESTS_EXAMPLE, indent=2),
    )
    source = forms.CharField(required=False, max_length=64, help_text="Where it came from, e.g. a dataset's name.")
    public = forms.BooleanField(required=False, help_text="Everyone may use it (operators only).")

    def __init__(self, *args, languages: list[str], may_publish: bool, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["language"].choices = [(name, name) for name in languages]
        if not may_publish:
            del self.fields["public"]
        if editing:
            self.fields["slug"].disabled = True

    def clean_tests(self):
        try:
            tests = json.loads(self.cleaned_data["tests"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
        if not isinstance(tests, list):
            raise forms.ValidationError("Must be a JSON list of tests.")
        return tests

    def body(self) -> dict:
        """The API's task body (without the slug when editing: it cannot change)."""
        body = {name: value for name, value in self.cleaned_data.items() if name in self.fields}
        if self.fields["slug"].disabled:
            body.pop("slug", None)
        return body

    def add_service_errors(self, exc: TaskInvalid) -> None:
        """Each ``{field: [message]}`` of the service on its field (``tests[0].kind`` on tests), else the form."""
        for name, errors in exc.errors.items():
            field = name.split(".")[0].split("[")[0]
            message = " ".join(errors) if field == name else f"{name}: {' '.join(errors)}"
            self.add_error(field if field in self.fields else None, message)
