"""Parsing task and batch bodies into typed values, with a clear error for each bad field.

``TaskInvalid`` (400) and ``BatchTooLarge`` (413) carry ``{field: [message]}`` like DRF's errors;
nothing is written before a body has been parsed whole.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields

from django.conf import settings

from apps.evaluations.models import Priority
from apps.evaluations.testing import Category, Match, TestKind
from apps.evaluations.validation import MAX_METADATA_BYTES
from apps.tasks.models import SLUG_PATTERN, Reuse, SamplesAre
from crucible.parsers import json_problem

SLUG = re.compile(rf"^{SLUG_PATTERN}$")
MAX_TESTS = 50  # each test's program is a file (and, compiled, a directory) in /sandbox (128 inodes)
MAX_TEST_TEXT = 256 * 1024  # code, stdin or expected output of one test
MAX_TESTS_TEXT = 1024 * 1024  # all of a task's tests together
MAX_PROMPT = 256 * 1024
MAX_K = 10
MAX_METADATA = 16 * 1024
MAX_LANGUAGES = 32  # languages one task's prompts or one check test may be given in
LANGUAGE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")  # a runtime's name (apps.sandboxing.catalog)


class TaskInvalid(Exception):
    """400, with ``errors`` as ``{field: [message, …]}``."""

    def __init__(self, errors: dict):
        super().__init__(str(errors))
        self.errors = errors


class BatchTooLarge(TaskInvalid):
    """413: more samples, or larger ones, than a batch may hold."""


def _text(body: dict, name: str, *, required: bool = False, limit: int = 200, default: str = "") -> str:
    value = body.get(name, None)
    if value is None:
        if required:
            raise TaskInvalid({name: ["This field is required."]})
        return default
    if not isinstance(value, str):
        raise TaskInvalid({name: ["Must be a string."]})
    if "\x00" in value:
        raise TaskInvalid({name: ["Must not contain NUL characters."]})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskInvalid({name: ["Must be valid Unicode: no lone surrogates."]}) from None
    if len(value) > limit:
        raise TaskInvalid({name: [f"Must be at most {limit} characters."]})
    return value


def _number(body: dict, name: str, default, *, low: float, high: float, integer: bool = False):
    value = body.get(name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TaskInvalid({name: ["Must be a number."]})
    if integer and not float(value).is_integer():
        raise TaskInvalid({name: ["Must be a whole number."]})
    if not low <= value <= high:
        raise TaskInvalid({name: [f"Must be between {low:g} and {high:g}."]})
    return int(value) if integer else float(value)


def parse_slug(value, name: str = "slug") -> str:
    if not isinstance(value, str) or not value:
        raise TaskInvalid({name: ["Must be a task slug, e.g. humaneval/0."]})
    if len(value) > 200 or not SLUG.match(value) or ".." in value:
        raise TaskInvalid(
            {name: ["Must be lowercase letters, digits and _ . / - (starting with a letter or digit), no '..'."]}
        )
    return value


def parse_test(raw, index: int) -> dict:
    where = f"tests[{index}]"
    if not isinstance(raw, dict):
        raise TaskInvalid({where: ["Must be an object."]})
    try:
        name = _text(raw, "name", required=True)
        if not name.strip():
            raise TaskInvalid({"name": ["Must not be blank."]})
        category = _text(raw, "category", default=Category.FUNCTIONAL)
        if category not in set(Category):
            raise TaskInvalid({"category": [f"Must be one of {', '.join(Category)}."]})
        kind = _text(raw, "kind", required=True)
        if kind not in set(TestKind):
            raise TaskInvalid({"kind": [f"Must be one of {', '.join(TestKind)}."]})
        test = {"name": name, "category": category, "kind": kind}
        if kind == TestKind.IO:
            test["stdin"] = _text(raw, "stdin", limit=MAX_TEST_TEXT)
            test["expected_stdout"] = _text(raw, "expected_stdout", required=True, limit=MAX_TEST_TEXT)
            match = _text(raw, "match", default=Match.EXACT)
            if match not in set(Match):
                raise TaskInvalid({"match": [f"Must be one of {', '.join(Match)}."]})
            test["match"] = match
        else:
            test["code"] = _text(raw, "code", required=True, limit=MAX_TEST_TEXT)
            if raw.get("code_by_language") is not None:
                test["code_by_language"] = parse_by_language(raw, "code_by_language", limit=MAX_TEST_TEXT)
        known = {"name", "category", "kind", "stdin", "expected_stdout", "match", "code", "code_by_language"}
        unknown = set(raw) - known
        if unknown:
            raise TaskInvalid({sorted(unknown)[0]: ["Unknown field."]})
        return test
    except TaskInvalid as exc:
        raise TaskInvalid({f"{where}.{key}": value for key, value in exc.errors.items()}) from None


def parse_by_language(body: dict, name: str, *, limit: int) -> dict[str, str]:
    """A ``{language: text}`` object (a check's code or the prompt in other languages than the task's)."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LANGUAGES:
        raise TaskInvalid({name: [f"Must be an object of at most {MAX_LANGUAGES} language: text entries."]})
    bad = [key for key in value if not isinstance(key, str) or not LANGUAGE.match(key)]
    if bad:
        raise TaskInvalid({name: [f"Not a runtime name: {str(bad[0])[:40]!r}."]})
    try:
        return {key: _text(value, key, limit=limit, required=True) for key in sorted(value)}
    except TaskInvalid as exc:
        raise TaskInvalid({f"{name}.{key}": message for key, message in exc.errors.items()}) from None


def tests_for_language(tests: list[dict], task_language: str, language: str) -> list[dict]:
    """The task's tests as a sample in ``language`` runs them: ``io`` tests as they are, each
    ``check`` with its code in that language (``code`` for the task's own language, else
    ``code_by_language``). Raises ``TaskInvalid`` naming the first check that lacks the language."""
    resolved = []
    for test in tests:
        if test["kind"] != TestKind.CHECK:
            resolved.append(test)
            continue
        variants = {task_language: test["code"], **test.get("code_by_language", {})}
        if language not in variants:
            given = ", ".join(sorted(variants))
            raise TaskInvalid(
                {"language": [f"Its check test {test['name']!r} has no code in {language} (only in {given})."]}
            )
        resolved.append(
            {key: value for key, value in test.items() if key != "code_by_language"} | {"code": variants[language]}
        )
    return resolved


@dataclass
class TaskBody:
    slug: str
    title: str
    prompt: str
    language: str
    entry_point: str
    timeout_s: float
    memory_mb: int
    tests: list[dict]
    public: bool
    source: str = ""
    prompts: dict[str, str] = field(default_factory=dict)  # the prompt in other languages (completions)


# The fields of a task body, in order: what the API accepts and the admin's form shows.
TASK_FIELDS = [f.name for f in fields(TaskBody)]


def parse_task(body, languages: set[str], *, may_publish: bool, partial_of: TaskBody | None = None) -> TaskBody:
    """A task body (POST) or the changes to one (PATCH, ``partial_of`` the current values)."""
    if not isinstance(body, dict):
        raise TaskInvalid({"non_field_errors": ["Expected a JSON object."]})
    base = partial_of
    unknown = set(body) - set(TASK_FIELDS)
    if unknown:
        raise TaskInvalid({sorted(unknown)[0]: ["Unknown field."]})
    if base is not None and "slug" in body and body["slug"] != base.slug:
        raise TaskInvalid({"slug": ["A task's slug cannot change; create a new task."]})
    slug = base.slug if base is not None else parse_slug(body.get("slug"))
    language = _text(body, "language", default=base.language if base else "python", limit=32)
    if language not in languages:
        raise TaskInvalid({"language": [f"Unknown language; one of {', '.join(sorted(languages))}."]})
    tests_raw = body.get("tests", None) if "tests" in body or base is None else None
    if tests_raw is None and base is not None:
        tests = base.tests
    else:
        if not isinstance(tests_raw, list) or not tests_raw:
            raise TaskInvalid({"tests": ["Must be a non-empty list of tests."]})
        if len(tests_raw) > MAX_TESTS:
            raise TaskInvalid({"tests": [f"At most {MAX_TESTS} tests per task."]})
        tests = [parse_test(raw, i) for i, raw in enumerate(tests_raw)]
        names = [t["name"] for t in tests]
        if len(set(names)) != len(names):
            raise TaskInvalid({"tests": ["Test names must be unique within a task."]})
        size = sum(
            len(t.get("code", ""))
            + len(t.get("stdin", ""))
            + len(t.get("expected_stdout", ""))
            + sum(map(len, t.get("code_by_language", {}).values()))
            for t in tests
        )
        if size > MAX_TESTS_TEXT:
            raise TaskInvalid({"tests": [f"All tests together must be at most {MAX_TESTS_TEXT} characters."]})
    public = body.get("public", base.public if base else False)
    if not isinstance(public, bool):
        raise TaskInvalid({"public": ["Must be true or false."]})
    if public and not may_publish:
        raise TaskInvalid({"public": ["Only operators may publish a task for everyone."]})
    return TaskBody(
        slug=slug,
        title=_text(body, "title", required=base is None, default=base.title if base else "") or slug,
        prompt=_text(body, "prompt", limit=MAX_PROMPT, default=base.prompt if base else ""),
        language=language,
        entry_point=_text(body, "entry_point", default=base.entry_point if base else ""),
        timeout_s=_number(
            body,
            "timeout_s",
            base.timeout_s if base else settings.SANDBOX_DEFAULT_TIMEOUT_S,
            low=0.1,
            high=settings.SANDBOX_MAX_TIMEOUT_S,
        ),
        memory_mb=_number(
            body,
            "memory_mb",
            base.memory_mb if base else settings.SANDBOX_DEFAULT_MEMORY_MB,
            low=16,
            high=settings.SANDBOX_MAX_MEMORY_MB,
            integer=True,
        ),
        tests=tests,
        public=public,
        source=_text(body, "source", limit=64, default=base.source if base else ""),
        prompts=parse_by_language(body, "prompts", limit=MAX_PROMPT)
        if "prompts" in body or base is None
        else base.prompts,
    )


@dataclass
class SampleBody:
    code: str
    task: str | None
    metadata: dict = field(default_factory=dict)
    language: str | None = None  # the sample's language (default: the batch's, else the task's)


@dataclass
class BatchBody:
    task: str | None
    samples: list[SampleBody]
    samples_are: str
    k: list[int]
    priority: str
    callback_url: str
    metadata: dict
    timeout_s: float | None
    memory_mb: int | None
    reuse: str = "none"
    language: str | None = None  # every sample's language unless it names its own (default: the task's)


def parse_batch(body) -> BatchBody:
    """The batch body of contract v2; 400 for a bad field, 413 for too many or too large samples."""
    if not isinstance(body, dict):
        raise TaskInvalid({"non_field_errors": ["Expected a JSON object."]})
    known = {
        "task",
        "samples",
        "samples_are",
        "k",
        "priority",
        "callback_url",
        "metadata",
        "timeout_s",
        "memory_mb",
        "reuse",
        "language",
    }
    unknown = set(body) - known
    if unknown:
        raise TaskInvalid({sorted(unknown)[0]: ["Unknown field."]})
    task = parse_slug(body["task"], "task") if body.get("task") is not None else None
    samples_raw = body.get("samples")
    if not isinstance(samples_raw, list):
        raise TaskInvalid({"samples": ["Must be a list of samples ({'code': …, 'task'?: …, 'metadata'?: …})."]})
    if not samples_raw:
        raise TaskInvalid({"samples": ["A batch needs at least one sample."]})
    if len(samples_raw) > settings.BATCH_MAX_SAMPLES:
        most, given = settings.BATCH_MAX_SAMPLES, len(samples_raw)
        raise BatchTooLarge({"samples": [f"A batch may hold at most {most} samples; this one has {given}."]})
    language = _language(body, "language")
    samples = [_parse_sample(raw, i, default_task=task) for i, raw in enumerate(samples_raw)]
    samples_are = body.get("samples_are", SamplesAre.PROGRAMS)
    if samples_are not in set(SamplesAre):
        raise TaskInvalid({"samples_are": ["Must be programs or completions."]})
    k = body.get("k", [1])
    if (
        not isinstance(k, list)
        or not k
        or len(k) > MAX_K
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in k)
    ):
        raise TaskInvalid({"k": [f"Must be a list of 1 to {MAX_K} whole numbers, each at least 1."]})
    priority = body.get("priority", Priority.NORMAL)
    if priority not in set(Priority):
        raise TaskInvalid({"priority": ["Must be low, normal or high."]})
    metadata = _metadata(body.get("metadata"), "metadata")
    reuse = body.get("reuse", Reuse.NONE)
    if reuse not in set(Reuse):
        raise TaskInvalid({"reuse": ['Must be "none" (a fresh sandbox per sample) or "batch".']})
    return BatchBody(
        language=language,
        reuse=reuse,
        task=task,
        samples=samples,
        samples_are=samples_are,
        k=sorted(set(k)),
        priority=priority,
        callback_url=_text(body, "callback_url", limit=2000),
        metadata=metadata,
        timeout_s=_number(body, "timeout_s", None, low=0.1, high=settings.SANDBOX_MAX_TIMEOUT_S),
        memory_mb=_number(body, "memory_mb", None, low=16, high=settings.SANDBOX_MAX_MEMORY_MB, integer=True),
    )


def _metadata(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskInvalid({where: ["Must be a JSON object."]})
    if (found := json_problem(value, where=where, forbid_nul=True)) is not None:
        raise TaskInvalid({where: [f"{found[0]} {found[1]}."]})
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise TaskInvalid({where: [f"Must be at most {MAX_METADATA_BYTES} bytes as JSON."]})
    return value


def _parse_sample(raw, index: int, *, default_task: str | None) -> SampleBody:
    where = f"samples[{index}]"
    if not isinstance(raw, dict):
        raise TaskInvalid({where: ["Must be an object with code."]})
    unknown = set(raw) - {"code", "task", "metadata", "language"}
    if unknown:
        raise TaskInvalid({f"{where}.{sorted(unknown)[0]}": ["Unknown field."]})
    code = raw.get("code")
    if not isinstance(code, str) or not code.strip():
        raise TaskInvalid({f"{where}.code": ["Must be a non-empty string."]})
    _checked_text(code, f"{where}.code")
    if len(code.encode("utf-8", errors="surrogatepass")) > settings.SANDBOX_MAX_CODE_BYTES:
        raise BatchTooLarge({f"{where}.code": [f"Larger than {settings.SANDBOX_MAX_CODE_BYTES} bytes."]})
    task = parse_slug(raw["task"], f"{where}.task") if raw.get("task") is not None else default_task
    if task is None:
        raise TaskInvalid({f"{where}.task": ["No task: give the batch a task or each sample one."]})
    return SampleBody(
        code=code,
        task=task,
        metadata=_metadata(raw.get("metadata"), f"{where}.metadata"),
        language=_language(raw, "language", where=f"{where}.language"),
    )


def _language(body: dict, name: str, *, where: str = "") -> str | None:
    """An optional runtime name (whether it is enabled is checked against the runtimes at submission)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not LANGUAGE.match(value):
        raise TaskInvalid({where or name: ["Must be a runtime's name, e.g. python, c, javascript."]})
    return value


def _checked_text(value: str, where: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates."""
    if "\x00" in value:
        raise TaskInvalid({where: ["Must not contain NUL characters."]})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskInvalid({where: ["Must be valid Unicode: no lone surrogates."]}) from None
