"""The typed contract between the runner and its callers: how a run ended and what may be asked of it.

Callers (``evaluations``, later ``sessions``) map these values to their own statuses and reasons;
they never read the wording of ``RunResult.error``, which is for people only.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How the program ended, as the runner saw it."""

    EXITED = "exited"  # it ended by itself; the exit code decides success
    TIMED_OUT = "timed_out"  # the wall-clock limit ran out; the runner killed it
    OOM_KILLED = "oom_killed"  # the kernel killed it at its memory limit
    OUTPUT_CAPPED = "output_capped"  # it wrote more than the output cap; the runner killed it
    CANCELLED = "cancelled"  # Command.CANCEL: SIGTERM, then SIGKILL after the grace
    STOPPED = "stopped"  # Command.STOP: SIGKILL at once
    ERROR = "error"  # the platform failed; ``RunResult.failure`` says how


class Command(StrEnum):
    """What a caller's ``control()`` may answer while a program runs (``None``: carry on)."""

    CANCEL = "cancel"  # SIGTERM to the program, SIGKILL after the kill grace
    STOP = "stop"  # SIGKILL now (emergency stop, safety rule, worker shutdown)


class Failure(StrEnum):
    """Why a run ended ``Outcome.ERROR``: whose fault it was, and whether running it again may help."""

    SETUP_REFUSED = "setup_refused"  # the engine refused the policy or the image is missing: a retry repeats it
    ENGINE_FAULT = "engine_fault"  # the engine failed under the run (restart, lost connection): retry once
    LAUNCHER = "launcher"  # the in-sandbox launcher could not start the program (deterministic)

    @property
    def transient(self) -> bool:
        return self is Failure.ENGINE_FAULT
