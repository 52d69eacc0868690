"""The "new evaluation" form. It only shapes input for ``services.submit``, which decides.

Limits are bounded here with the same minima (``policy.MINIMA``) and maxima (``services.maxima_for``)
the service applies, so the page can show the allowed ranges and the browser can check them; the
service still has the final word and its field errors are copied back onto the form.
"""

from __future__ import annotations

import uuid

from django import forms
from django.conf import settings

from apps.evaluations import runtimes
from apps.evaluations.models import Priority, Runtime
from apps.evaluations.validation import LABEL_RULE, MAX_LABELS, MAX_NAME_CHARS
from apps.sandboxing.policy import MINIMA

EXAMPLES = {
    "hello": {
        "title": "Hello world",
        "language": "python",
        "code": 'import sys\n\nprint("Hello from the sandbox")\nprint("and a line on stderr", file=sys.stderr)\n',
    },
    "timeout": {
        "title": "A timeout",
        "language": "python",
        "timeout_s": 3,
        "code": (
            "import time\n\n# Prints a tick every half second and never ends: the wall-clock limit stops it.\n"
            'n = 0\nwhile True:\n    n += 1\n    print(f"tick {n}", flush=True)\n    time.sleep(0.5)\n'
        ),
    },
    "memory": {
        "title": "A memory bomb",
        "language": "python",
        "memory_mb": 64,
        "code": (
            "# Grows a list by 10 MB at a time until the memory limit kills it.\n"
            "blocks = []\nwhile True:\n    blocks.append(bytearray(10 * 1024 * 1024))\n"
            '    print(f"{len(blocks) * 10} MB", flush=True)\n'
        ),
    },
    "bash": {
        "title": "Bash loop",
        "language": "bash",
        "code": 'for i in 1 2 3 4 5; do\n  echo "line $i"\n  echo "warning $i" >&2\n  sleep 0.2\ndone\n',
    },
}


class EvaluationForm(forms.Form):
    retry_after: int | None = None  # seconds, when the submission was refused by a quota (429)
    forbidden = False  # the submission asked for what the user may not have (403)

    code = forms.CharField(
        strip=False,
        widget=forms.Textarea(
            attrs={
                "class": "code-editor",
                "rows": 16,
                "spellcheck": "false",
                "autocapitalize": "off",
                "autocomplete": "off",
                "data-code-editor": "",
            }
        ),
        help_text="Tab indents (four spaces). To leave the editor with the keyboard, press Esc, then Tab.",
    )
    language = forms.ChoiceField()
    stdin = forms.CharField(
        required=False,
        strip=False,
        label="Standard input",
        widget=forms.Textarea(attrs={"class": "code-editor code-editor--small", "rows": 3, "spellcheck": "false"}),
    )
    timeout_s = forms.FloatField(required=False, label="Timeout (seconds)")
    memory_mb = forms.IntegerField(required=False, label="Memory (MiB)")
    cpus = forms.FloatField(required=False, label="CPUs")
    priority = forms.ChoiceField(choices=Priority.choices, initial=Priority.NORMAL)
    name = forms.CharField(
        required=False,
        max_length=MAX_NAME_CHARS,
        help_text="Optional: to tell this run apart in the list.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. baseline, fixed off-by-one", "autocomplete": "off"}),
    )
    labels = forms.CharField(
        required=False,
        max_length=MAX_LABELS * 66,
        help_text=f"Optional, comma-separated, at most {MAX_LABELS}; each {LABEL_RULE}.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. model=gpt-4, experiment-3", "autocomplete": "off"}),
    )
    # A fresh key per rendered form: a double click or a resent POST gives the same evaluation.
    idempotency_key = forms.CharField(required=False, widget=forms.HiddenInput, max_length=200)

    def __init__(self, *args, maxima, high_priority: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.maxima = maxima
        self._priorities(high_priority)
        states = map(runtimes.state_of, Runtime.objects.filter(enabled=True))
        self.fields["language"].choices = [(state.name, _runtime_label(state)) for state in states]
        self.fields["language"].initial = "python"  # the contract's default language
        self.fields["idempotency_key"].initial = uuid.uuid4().hex
        default_timeout, default_memory = settings.SANDBOX_DEFAULT_TIMEOUT_S, settings.SANDBOX_DEFAULT_MEMORY_MB
        self._limit("timeout_s", MINIMA.timeout_s, maxima.timeout_s, default_timeout, "s", step="0.1")
        self._limit("memory_mb", MINIMA.memory_mb, maxima.memory_mb, default_memory, "MiB", step="1")
        default_cpus = min(settings.SANDBOX_DEFAULT_CPUS, settings.SANDBOX_MAX_CPUS)
        self._limit("cpus", MINIMA.cpus, maxima.cpus, default_cpus, "", step="0.1")

    def _priorities(self, high_priority: bool) -> None:
        """Offer "high" only to those who may use it; the field still takes it, so the service answers a
        crafted POST with its own clear refusal (403) rather than "not a valid choice"."""
        field = self.fields["priority"]
        if high_priority:
            field.help_text = "High runs before everyone's normal and low runs."
        else:
            field.widget.choices = [(value, label) for value, label in Priority.choices if value != Priority.HIGH]
            field.help_text = "High priority is for operators and users whose quota allows it."

    def refusal_status(self) -> int:
        """The HTTP status of a refused submission: 429 over a quota, 403 not allowed, else 400."""
        if self.retry_after:
            return 429
        return 403 if self.forbidden else 400

    def _limit(self, name, low, high, default, unit, *, step):
        field = self.fields[name]
        # The browser checks these attributes; clean() checks the same range on the server.
        field.widget.attrs.update({"min": f"{low:g}", "max": f"{high:g}", "step": step, "placeholder": f"{default:g}"})
        suffix = f" {unit}" if unit else ""
        field.help_text = f"Allowed {low:g}–{high:g}{suffix}; empty means the default, {default:g}{suffix}."

    def clean(self):
        cleaned = super().clean()
        for name, low, high in (
            ("timeout_s", MINIMA.timeout_s, self.maxima.timeout_s),
            ("memory_mb", MINIMA.memory_mb, self.maxima.memory_mb),
            ("cpus", MINIMA.cpus, self.maxima.cpus),
        ):
            value = cleaned.get(name)
            if value is not None and not (low <= value <= high):
                self.add_error(name, f"Must be between {low:g} and {high:g}.")
        return cleaned

    def submission_body(self) -> dict:
        """The body ``services.submit`` takes, the same shape as the API's."""
        data = self.cleaned_data
        body = {
            # Browsers send a textarea's line breaks as CRLF; programs expect what was typed (LF).
            "code": data["code"].replace("\r\n", "\n"),
            "language": data["language"],
            "stdin": data["stdin"].replace("\r\n", "\n"),
            "priority": data["priority"],
        }
        for name in ("timeout_s", "memory_mb", "cpus"):
            if data.get(name) is not None:
                body[name] = data[name]
        if data.get("name"):
            body["name"] = data["name"]
        if data.get("labels"):
            body["labels"] = data["labels"]  # comma-separated: validation.parse_labels splits it
        return body

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        """Copy ``SubmissionInvalid.errors`` onto the form, unknown keys as form-wide errors."""
        for name, messages in errors.items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)


def _runtime_label(state: runtimes.RuntimeState) -> str:
    """How the form names a runtime: its version when known, and whether it can run now."""
    if state.available is False and state.build is not None and state.build["status"] == "failed":
        return f"{state.name} (not available: its image build failed)"
    if state.available is False and state.building:
        return f"{state.name} (its image is being built: runs wait for it)"
    if state.available is False and state.buildable and settings.RUNTIME_BUILD_ON_DEMAND:
        return f"{state.name} (its image is built on first use: the first run waits minutes)"
    if state.available is False:
        return f"{state.name} (not available: its image is not built)"
    return f"{state.name} ({state.version})" if state.version else state.name
