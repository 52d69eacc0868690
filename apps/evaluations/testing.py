"""Scoring an evaluation against its task's tests: what each test runs, and its verdict.

An evaluation with ``tests`` (a sample of a batch, see ``apps.tasks``) runs once per test, each in a
fresh process in the sample's sandbox (``runner.run_programs``):

- ``io``: the sample's program with the test's stdin; it passes when its stdout matches
  ``expected_stdout`` (``exact``; ``strip``: trailing whitespace of each line and blank lines at
  either end ignored; ``tokens``: the same whitespace-separated tokens);
- ``check``: the sample followed by the test's code in one file (HumanEval style); it passes on exit 0.

The evaluation passes when every test passed. What people read (``TestVerdict.message``) never
holds a hidden test's code, input or expected output, nor anything the program printed under a
hidden test (a program can print its own file, and so the test appended to it): only our own words,
the exit code, the line number where the output first differs and, for a ``check``, the name of a
Python built-in exception. ``detail`` (for those who may see the tests) adds the differing lines and
the end of stderr.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from enum import StrEnum

from apps.evaluations.models import TestStatus
from apps.sandboxing.outcomes import Outcome, RunResult
from apps.sandboxing.runner import Program

CAPTURE_BYTES = 1024 * 1024  # of each stream of each test, to judge it (the log has its own cap)
DETAIL_STDERR_BYTES = 2000
SHOWN_LINE_CHARS = 200
BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::|$)")


class TestKind(StrEnum):
    IO = "io"
    CHECK = "check"


class Match(StrEnum):
    EXACT = "exact"
    STRIP = "strip"
    TOKENS = "tokens"


class Category(StrEnum):
    FUNCTIONAL = "functional"
    PERFORMANCE = "performance"
    CHAOS = "chaos"


@dataclass
class Capture:
    """What one test's program wrote, up to ``CAPTURE_BYTES`` per stream."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def add(self, stream: str, data: bytes) -> None:
        buffer = self.stdout if stream == "stdout" else self.stderr
        buffer += data[: max(0, CAPTURE_BYTES - len(buffer))]


@dataclass
class TestVerdict:
    position: int
    name: str
    category: str
    status: TestStatus
    duration_ms: int | None = None
    exit_code: int | None = None
    message: str = ""
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == TestStatus.PASSED


def program_for(code: str, test: dict) -> Program:
    """What runs for ``test``: the sample alone with the test's stdin, or the sample and the check."""
    encoded = code.encode("utf-8", errors="surrogatepass")
    if test["kind"] == TestKind.CHECK:
        check = test.get("code", "").encode("utf-8", errors="surrogatepass")
        return Program(code=encoded + b"\n\n" + check + b"\n")
    return Program(code=encoded, stdin=test.get("stdin", "").encode("utf-8", errors="surrogatepass"))


def normalise(text: str, match: Match) -> list[str]:
    """The lines (or tokens) of ``text`` as ``match`` compares them."""
    if match == Match.TOKENS:
        return text.split()
    if match == Match.STRIP:
        lines = [line.rstrip() for line in text.strip().splitlines()]
        return lines
    return text.split("\n")


def first_difference(actual: list[str], expected: list[str]) -> int | None:
    """The 1-based index where the two differ (a missing or extra line counts), or None when equal."""
    for index, (got, want) in enumerate(zip(actual, expected, strict=False), start=1):
        if got != want:
            return index
    if len(actual) != len(expected):
        return min(len(actual), len(expected)) + 1
    return None


def _shown(value: str | None) -> str:
    if value is None:
        return "(nothing)"
    return repr(value[:SHOWN_LINE_CHARS]) + ("…" if len(value) > SHOWN_LINE_CHARS else "")


def _stderr_tail(capture: Capture) -> str:
    return bytes(capture.stderr[-DETAIL_STDERR_BYTES:]).decode("utf-8", "replace").replace("\x00", "\ufffd")


def builtin_exception(stderr: str) -> str:
    """The Python built-in exception a traceback ends with (e.g. ``AssertionError``), or "".

    Only a built-in's name: a program can print anything, and a name it made up could carry what
    it read from a hidden test."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    found = EXCEPTION_LINE.match(lines[-1].strip())
    if found and found.group(1) in BUILTIN_EXCEPTIONS:
        return found.group(1)
    return ""


def judge(position: int, test: dict, result: RunResult, capture: Capture) -> TestVerdict:
    """The verdict of one test from how its program ended and what it wrote."""
    verdict = TestVerdict(
        position=position,
        name=test["name"],
        category=test.get("category", Category.FUNCTIONAL),
        status=TestStatus.FAILED,
        duration_ms=result.duration_ms,
        exit_code=result.exit_code if result.outcome == Outcome.EXITED else None,
    )
    if result.outcome == Outcome.TIMED_OUT:
        verdict.status, verdict.message = TestStatus.TIMED_OUT, "timed out"
    elif result.outcome == Outcome.OOM_KILLED:
        verdict.status, verdict.message = TestStatus.OOM_KILLED, "killed: out of memory"
    elif result.outcome == Outcome.OUTPUT_CAPPED:
        verdict.status, verdict.message = TestStatus.OUTPUT_CAP, "stopped: the output cap was reached"
    elif result.outcome == Outcome.COMPILE_ERROR:
        verdict.message = "compile error: the program did not compile"
    elif result.outcome != Outcome.EXITED:
        verdict.status, verdict.message = TestStatus.NOT_RUN, "not run to its end"
    elif test["kind"] == TestKind.CHECK:
        _judge_check(verdict, result, capture)
    else:
        _judge_io(verdict, test, result, capture)
    if verdict.status != TestStatus.PASSED and capture.stderr:
        verdict.detail = "\n".join(filter(None, [verdict.detail, "stderr (end):\n" + _stderr_tail(capture)]))
    return verdict


def _judge_check(verdict: TestVerdict, result: RunResult, capture: Capture) -> None:
    if result.exit_code == 0:
        verdict.status = TestStatus.PASSED
        return
    exception = builtin_exception(_stderr_tail(capture))
    verdict.message = f"exit code {result.exit_code}" + (f" ({exception})" if exception else "")


def _judge_io(verdict: TestVerdict, test: dict, result: RunResult, capture: Capture) -> None:
    match = Match(test.get("match", Match.EXACT))
    actual = normalise(bytes(capture.stdout).decode("utf-8", "replace"), match)
    expected = normalise(test.get("expected_stdout", ""), match)
    at = first_difference(actual, expected)
    if at is None:
        verdict.status = TestStatus.PASSED if result.exit_code == 0 else TestStatus.FAILED
        if result.exit_code != 0:
            verdict.message = f"right output, but exit code {result.exit_code}"
        return
    unit = "token" if match == Match.TOKENS else "line"
    verdict.message = f"wrong output at {unit} {at}" + (f" (exit code {result.exit_code})" if result.exit_code else "")
    got = actual[at - 1] if at <= len(actual) else None
    want = expected[at - 1] if at <= len(expected) else None
    verdict.detail = f"{unit} {at}: expected {_shown(want)}, got {_shown(got)}"


def not_run(position: int, test: dict) -> TestVerdict:
    return TestVerdict(
        position=position,
        name=test["name"],
        category=test.get("category", Category.FUNCTIONAL),
        status=TestStatus.NOT_RUN,
        message="not run: the run ended before this test",
    )


def combined(results: list[RunResult], verdicts: list[TestVerdict]) -> RunResult:
    """One ``RunResult`` for the evaluation: the sequence's end when it was cut short (cancel, stop,
    a platform fault), else ``Outcome.EXITED`` with no exit code of its own (each test has one; the
    evaluation's status says whether all passed, see ``running.end_of_tests``)."""
    last = results[-1]
    cut_short = last.outcome in (Outcome.CANCELLED, Outcome.STOPPED, Outcome.ERROR)
    peaks = [r.peak_memory_bytes for r in results if r.peak_memory_bytes is not None]
    cpu = [r.cpu_time_ms for r in results if r.cpu_time_ms is not None]
    ran = [r for r in results if r.started_at is not None]
    return RunResult(
        outcome=last.outcome if cut_short else Outcome.EXITED,
        exit_code=last.exit_code if cut_short else None,
        signal=last.signal if cut_short else None,
        started_at=ran[0].started_at if ran else None,
        finished_at=ran[-1].finished_at if ran else None,
        duration_ms=sum(r.duration_ms or 0 for r in results),
        output_bytes=sum(r.output_bytes for r in results),
        output_truncated=any(r.output_truncated for r in results),
        peak_memory_bytes=max(peaks) if peaks else None,
        cpu_time_ms=sum(cpu) if cpu else None,
        artifacts=last.artifacts,
        artifacts_truncated=last.artifacts_truncated,
        artifacts_skipped_names=last.artifacts_skipped_names,
        image_id=next((r.image_id for r in results if r.image_id), ""),
        failure=last.failure if cut_short else None,
        error=last.error if cut_short else "",
        engine_runtime=next((r.engine_runtime for r in results if r.engine_runtime), ""),
        warm=results[0].warm,
        evidence=last.evidence,
    )
