"""The typed contract between the runner and its callers: what is run, how it ended, what may be asked of it.

Callers (``evaluations``, later ``sessions``) map these values to their own statuses and reasons;
they never read the wording of ``RunResult.error``, which is for people only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from apps.sandboxing.policy import Limits, Runtime
from apps.sandboxing.streams import ParsedArtifact


class Outcome(StrEnum):
    """How the program ended, as the runner saw it."""

    EXITED = "exited"  # it ended by itself; the exit code decides success
    COMPILE_ERROR = "compile_error"  # a compiled runtime's compile step failed: the program never ran
    TIMED_OUT = "timed_out"  # the wall-clock limit ran out; the runner killed it
    OOM_KILLED = "oom_killed"  # the kernel killed it at its memory limit
    OUTPUT_CAPPED = "output_capped"  # it wrote more than the output cap; the runner killed it
    CANCELLED = "cancelled"  # Command.CANCEL: SIGTERM, then SIGKILL after the grace
    STOPPED = "stopped"  # Command.STOP: SIGKILL at once
    ERROR = "error"  # the platform failed; ``RunResult.failure`` says how


class Command(StrEnum):
    """What a caller's ``control()`` may answer while a program runs (``None``: carry on)."""

    CANCEL = "cancel"  # SIGTERM to the program, SIGKILL after the kill grace
    STOP = "stop"  # SIGKILL now (worker shutdown)
    # Freeze now, keep the evidence (the process view, /output), then SIGKILL: a safety rule or an
    # emergency stop. The program makes no progress after the freeze (``Sandbox.preserve_evidence``).
    STOP_KEEPING_EVIDENCE = "stop_keeping_evidence"


class Failure(StrEnum):
    """Why a run ended ``Outcome.ERROR``: whose fault it was, and whether running it again may help."""

    SETUP_REFUSED = "setup_refused"  # the engine refused the policy or the image is missing: a retry repeats it
    ENGINE_FAULT = "engine_fault"  # the engine failed under the run (restart, lost connection): retry once
    # The engine could not be reached to create the sandbox (restarting): nothing ran; try again once it answers.
    ENGINE_AWAY = "engine_away"
    LAUNCHER = "launcher"  # the in-sandbox launcher could not start the program (deterministic)

    @property
    def transient(self) -> bool:
        return self in (Failure.ENGINE_FAULT, Failure.ENGINE_AWAY)


@dataclass(frozen=True)
class RunRequest:
    """One program to run: its code and stdin, the runtime that runs it, and its limits."""

    run_id: str  # names the container and labels it (letters, digits, '_', '.', '-')
    runtime: Runtime
    code: bytes
    stdin: bytes
    limits: Limits
    collect_artifacts: bool = True  # False: /output is left for a later program of the same sandbox
    # A submission with several files: the others (plain names, next to the entry point), checked by
    # ``policy.check_submission_extras``; ``args`` follow the run command (never a shell); ``env`` is
    # added to the program's environment (never replacing the platform's or the runtime's).
    files: dict[str, bytes] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ResourceSample:
    """What the sandbox used at one moment of a run (about once a second)."""

    at: datetime
    cpu_percent: float
    memory_bytes: int
    pids: int
    processes: list[str] | None = None  # the names of the processes in it, when the process view was read


@dataclass
class Evidence:
    """What was kept of a sandbox stopped for safety before its removal (``Sandbox.preserve_evidence``).

    Times are from the moment the stop was obeyed: ``freeze_ms`` until every process in the sandbox
    was frozen (the program makes no progress after it), ``total_ms`` until the evidence step ended
    (the container is then killed and removed)."""

    frozen: bool = False
    frozen_by: str = ""  # "pause" (the engine's) or "sigstop" (gVisor: every process inside stopped by runsc)
    freeze_ms: float | None = None
    programs_killed: bool = False
    collected: bool = False
    total_ms: float = 0.0
    processes: list[dict] = field(default_factory=list)  # the process view at the freeze
    detail: str = ""  # what went wrong, for people

    def as_dict(self) -> dict:
        return {
            "frozen": self.frozen,
            "frozen_by": self.frozen_by,
            "freeze_ms": self.freeze_ms,
            "programs_killed": self.programs_killed,
            "collected": self.collected,
            "total_ms": round(self.total_ms, 1),
            "processes": self.processes,
            "detail": self.detail,
        }


@dataclass
class RunResult:
    """How one run ended. ``failure`` is set exactly when ``outcome`` is ``Outcome.ERROR``."""

    outcome: Outcome
    exit_code: int | None
    signal: int | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    output_bytes: int
    output_truncated: bool
    peak_memory_bytes: int | None
    cpu_time_ms: int | None
    artifacts: list[ParsedArtifact]
    artifacts_truncated: bool
    image_id: str
    failure: Failure | None = None
    error: str = ""  # for people only: no caller may parse it
    engine_runtime: str = ""  # the engine runtime the sandbox ran under; empty when none was created
    warm: bool = False  # the sandbox came from a warm pool (started before the run)
    artifacts_skipped_names: int = 0  # files in /output left out for their name (streams.MAX_NAME_BYTES)
    compile_ms: int | None = None  # a compiled runtime's compile step, wall clock; None: nothing compiled
    evidence: Evidence | None = None  # set when a stop froze the sandbox to keep its evidence

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        if (self.outcome is Outcome.ERROR) != (self.failure is not None):
            raise ValueError("a RunResult has a failure exactly when its outcome is ERROR")

    @classmethod
    def not_run(cls, outcome: Outcome, *, failure: Failure | None = None, error: str = "", image_id: str = ""):
        """A run that ended before the program started (or without a trustworthy account of it)."""
        return cls(
            outcome=outcome,
            exit_code=None,
            signal=None,
            started_at=None,
            finished_at=None,
            duration_ms=None,
            output_bytes=0,
            output_truncated=False,
            peak_memory_bytes=None,
            cpu_time_ms=None,
            artifacts=[],
            artifacts_truncated=False,
            image_id=image_id,
            failure=failure,
            error=error,
        )

    @classmethod
    def failed(cls, failure: Failure, error: str, *, image_id: str = "") -> RunResult:
        """An ``Outcome.ERROR`` result: the platform failed, ``failure`` says how."""
        return cls.not_run(Outcome.ERROR, failure=failure, error=error, image_id=image_id)
