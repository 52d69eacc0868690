"""Turn a submission body into clean values, or collect field errors. No I/O besides runtimes."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from django.conf import settings

from apps.evaluations import runtimes
from apps.evaluations.callbacks import targets
from apps.evaluations.models import Priority, Runtime
from apps.sandboxing.policy import MINIMA, submission_extras_problems
from crucible.parsers import json_problem

MAX_METADATA_BYTES = 16 * 1024
FIELDS = {
    "code",
    "language",
    "stdin",
    "timeout_s",
    "memory_mb",
    "cpus",
    "priority",
    "metadata",
    "callback_url",
    "files",
    "args",
    "env",
    "name",
    "labels",
}
MAX_NAME_CHARS = 100
MAX_LABELS = 10
MAX_LABEL_CHARS = 64
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=/+@-]*")
LABEL_RULE = f"at most {MAX_LABEL_CHARS} characters: a letter or digit, then letters, digits and _ . : = / + @ -"


class SubmissionInvalid(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


class SubmissionTooLarge(Exception):
    pass


@dataclass
class Submission:
    code: str
    language: str
    stdin: str = ""
    timeout_s: float | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    priority: str = Priority.NORMAL
    metadata: dict = field(default_factory=dict)
    callback_url: str = ""  # its form only; where it resolves to is checked by services.submit
    files: dict[str, str] = field(default_factory=dict)  # besides the entry point (``code``)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    labels: list[str] = field(default_factory=list)
    # Its runtime's image is missing and will be built (``apps.evaluations.builds``): the run waits for it.
    await_build: bool = False


@dataclass(frozen=True)
class Maxima:
    timeout_s: float
    memory_mb: int
    cpus: float


def _number(errors, name, value, *, integer: bool, low: float, high: float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not float(value).is_integer()):
        errors[name] = [f"Must be {'an integer' if integer else 'a number'}."]
        return None
    if not math.isfinite(value) or not (low <= value <= high):
        errors[name] = [f"Must be between {low:g} and {high:g}."]
        return None
    return int(value) if integer else float(value)


def _text_error(text: str) -> str | None:
    """Why ``text`` cannot be stored (PostgreSQL text holds neither NUL nor lone surrogates), or None."""
    if "\x00" in text:
        return "Must not contain NUL characters."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode: no lone surrogates (such as \\ud800)."
    return None


def parse_name(value, errors: dict) -> str:
    """An optional name: one line of at most MAX_NAME_CHARS printable characters, trimmed."""
    if value is None:
        return ""
    if not isinstance(value, str):
        errors["name"] = ["Must be a string."]
        return ""
    value = value.strip()
    if len(value) > MAX_NAME_CHARS:
        errors["name"] = [f"Must be at most {MAX_NAME_CHARS} characters."]
    elif any(not character.isprintable() for character in value) or _text_error(value):
        errors["name"] = ["Must be one line of printable characters."]
    return value


def parse_labels(value, errors: dict) -> list[str]:
    """Optional labels: a list (or one comma-separated string) of at most MAX_LABELS distinct labels."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors["labels"] = ["Must be a list of strings."]
        return []
    labels = list(dict.fromkeys(item.strip() for item in value if item.strip()))
    bad = [label for label in labels if len(label) > MAX_LABEL_CHARS or not LABEL.fullmatch(label)]
    if bad:
        errors["labels"] = [f"Not a valid label: {bad[0][:80]!r}; each label is {LABEL_RULE}."]
    elif len(labels) > MAX_LABELS:
        errors["labels"] = [f"At most {MAX_LABELS} labels."]
    return labels


def parse_submission(body, maxima: Maxima) -> Submission:
    """Validate a JSON-decoded body. Raises SubmissionTooLarge (413) or SubmissionInvalid (400)."""
    if not isinstance(body, dict):
        raise SubmissionInvalid({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        errors["non_field_errors"] = [f"Unknown field(s): {', '.join(map(str, unknown))[:200]}."]

    code = body.get("code")
    if code is None or code == "":
        errors["code"] = ["This field is required."]
    elif not isinstance(code, str):
        errors["code"] = ["Must be a string."]
    elif len(code.encode("utf-8", errors="surrogatepass")) > settings.SANDBOX_MAX_CODE_BYTES:
        raise SubmissionTooLarge(f"code is larger than {settings.SANDBOX_MAX_CODE_BYTES} bytes")
    elif (problem := _text_error(code)) is not None:
        errors["code"] = [problem]

    stdin = body.get("stdin", "")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        errors["stdin"] = ["Must be a string."]
    elif len(stdin.encode("utf-8", errors="surrogatepass")) > settings.SANDBOX_MAX_STDIN_BYTES:
        raise SubmissionTooLarge(f"stdin is larger than {settings.SANDBOX_MAX_STDIN_BYTES} bytes")
    elif (problem := _text_error(stdin)) is not None:
        errors["stdin"] = [problem]

    language = body.get("language", "python")
    enabled = {runtime.name: runtime for runtime in Runtime.objects.filter(enabled=True)}
    ready = runtimes.Readiness.READY
    if not isinstance(language, str) or language not in enabled:
        errors["language"] = [f"Unknown language; choose one of: {', '.join(enabled)}."]
    else:
        ready, unavailable = runtimes.readiness(enabled[language])
        if unavailable:
            errors["language"] = [unavailable]

    timeout_s = _number(
        errors, "timeout_s", body.get("timeout_s"), integer=False, low=MINIMA.timeout_s, high=maxima.timeout_s
    )
    memory_mb = _number(
        errors, "memory_mb", body.get("memory_mb"), integer=True, low=MINIMA.memory_mb, high=maxima.memory_mb
    )
    cpus = _number(errors, "cpus", body.get("cpus"), integer=False, low=MINIMA.cpus, high=maxima.cpus)

    priority = body.get("priority", Priority.NORMAL)
    if priority not in Priority.values:
        errors["priority"] = [f"Must be one of: {', '.join(Priority.values)}."]

    metadata = body.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        errors["metadata"] = ["Must be a JSON object."]
    elif (found := json_problem(metadata, where="metadata", forbid_nul=True)) is not None:
        errors["metadata"] = [f"{found[0]} {found[1]}."]
    elif len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        errors["metadata"] = [f"Must be at most {MAX_METADATA_BYTES} bytes as JSON."]

    files, args, env = _extras(errors, body, enabled.get(language) if isinstance(language, str) else None, code)

    callback_url = body.get("callback_url") or ""
    if callback_url:
        try:
            targets.parse(callback_url)
        except targets.CallbackUrlRefused as exc:
            errors["callback_url"] = [exc.message]

    name = parse_name(body.get("name"), errors)
    labels = parse_labels(body.get("labels"), errors)

    if errors:
        raise SubmissionInvalid(errors)
    return Submission(
        code,
        language,
        stdin,
        timeout_s,
        memory_mb,
        cpus,
        priority,
        metadata,
        callback_url,
        files,
        args,
        env,
        name,
        labels,
        await_build=ready == runtimes.Readiness.AWAIT_BUILD,
    )


def _extras(errors, body, runtime, code) -> tuple[dict, list, dict]:
    """``files``, ``args`` and ``env`` of a submission, their shapes and then the sandbox's rules
    (``policy.submission_extras_problems``); raises ``SubmissionTooLarge`` when code and files
    together pass ``SANDBOX_MAX_CODE_BYTES``."""
    files = body.get("files") or {}
    args = body.get("args") or []
    env = body.get("env") or {}
    shapes = {"files": isinstance(files, dict), "args": isinstance(args, list), "env": isinstance(env, dict)}
    for name, ok in shapes.items():
        if not ok:
            errors[name] = ["Must be a JSON object." if name != "args" else "Must be a list of strings."]
    files, args, env = (
        (files if shapes["files"] else {}),
        (args if shapes["args"] else []),
        (env if shapes["env"] else {}),
    )
    if runtime is None:
        return {}, [], {}
    for name, problem in submission_extras_problems(runtime.to_sandbox(), files, args, env).items():
        errors[name] = [problem]
    for name, content in files.items():
        if name not in errors and isinstance(content, str) and (problem := _text_error(content)) is not None:
            errors["files"] = [f"{name}: {problem}"]
    if "files" not in errors and isinstance(code, str):
        total = sum(len(c.encode("utf-8", errors="surrogatepass")) for c in [code, *files.values()])
        if total > settings.SANDBOX_MAX_CODE_BYTES:
            raise SubmissionTooLarge(f"code and files are larger than {settings.SANDBOX_MAX_CODE_BYTES} bytes together")
    return files, args, env
