"""Keep the evidence of a sandbox stopped for safety before it is killed and removed.

A plain stop SIGKILLs the container, and with it go /output (a tmpfs) and the processes. For a
safety rule or an emergency stop (``Command.STOP_KEEPING_EVIDENCE``) the runner instead:

1. freezes the sandbox (the engine's pause; bounded by ``FREEZE_WAIT_S``, else it kills at once):
   from here on the program makes no progress, so the stop is not delayed by what follows;
2. reads the process view while frozen (what ran at the stop);
3. under runc, SIGKILLs the program's processes while they are frozen (a fork bomb that filled the
   pids limit leaves no room for an exec), thaws, and clears what is left with the reaper;
   under gVisor (``runsc kill`` refuses a paused sandbox) it thaws and clears with the reaper;
4. collects /output through the usual collector, with the usual caps (hostile input, parsed as such);
   when the reaper could not start (a fork bomb under gVisor holds every process slot of the
   sandbox user), the collector runs as ``nobody`` beside the program's processes;
5. kills the container. The whole step is bounded by ``SANDBOX_EVIDENCE_DEADLINE_S``; a freeze or
   thaw that fails kills at once and says so in ``Evidence.detail``. After the thaw the program
   could run again until it is cleared: the reaper gets ``CLEAR_WAIT_S`` and a collection beside
   processes that could not be cleared ``BESIDE_COLLECT_S``, so it never runs more than about 5 s.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

from apps.sandboxing.outcomes import Evidence
from apps.sandboxing.policy import OUTPUT_DIR, SANDBOX_USER
from apps.sandboxing.sandbox import Sandbox
from apps.sandboxing.streams import ParsedArtifact

log = logging.getLogger(__name__)

FREEZE_WAIT_S = 2.0  # the longest the stop waits for the engine's pause before it kills instead
MAX_PROCESSES_KEPT = 200
FALLBACK_COLLECTOR_USER = "65534:65534"  # nobody: not the sandbox user, no privilege
# After the thaw the program could run again until it is cleared: the reaper gets this long, and a
# collection beside processes that could not be cleared this long, before the container is killed.
CLEAR_WAIT_S = 2.0
BESIDE_COLLECT_S = 3.0


def bounded(call, wait_s: float) -> tuple[bool, object]:
    """Run ``call()`` on a helper thread and wait at most ``wait_s``: (finished, its answer or exception)."""
    done = threading.Event()
    answer: list = []

    def run() -> None:
        try:
            answer.append(call())
        except Exception as exc:
            answer.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True, name="sandbox-evidence").start()
    return done.wait(wait_s), (answer[0] if answer else None)


def freeze_bounded(sandbox: Sandbox, wait_s: float = FREEZE_WAIT_S) -> bool:
    """``sandbox.freeze()``, waited for at most ``wait_s`` (a wedged engine must not delay the stop)."""
    done = threading.Event()
    answer: list[bool] = []

    def pause() -> None:
        answer.append(sandbox.freeze())
        done.set()

    threading.Thread(target=pause, daemon=True, name="sandbox-freeze").start()
    return done.wait(wait_s) and bool(answer and answer[0])


def preserve(
    sandbox: Sandbox, *, collect: bool, started: float | None = None, directory: str = OUTPUT_DIR
) -> tuple[Evidence, list[ParsedArtifact], bool, int]:
    """Freeze, look, clear, collect, kill (see the module). Returns the evidence account and what
    ``Sandbox.collect_artifacts`` returns (empty when nothing was collected) of ``directory`` (/output;
    a session's workspace for a session). Never raises."""
    started = time.monotonic() if started is None else started
    deadline = started + settings.SANDBOX_EVIDENCE_DEADLINE_S
    evidence = Evidence()
    artifacts: tuple[list[ParsedArtifact], bool, int] = ([], False, 0)
    try:
        evidence.frozen = freeze_bounded(sandbox)
        if not evidence.frozen:
            evidence.detail = (
                "the engine did not pause the sandbox (it refused, or not within the bound): "
                "killed at once, nothing collected"
            )
            return evidence, *artifacts
        evidence.freeze_ms = round((time.monotonic() - started) * 1000, 1)
        evidence.processes = [p.as_dict() for p in sandbox.process_view()[:MAX_PROCESSES_KEPT]]
        sandbox.kill_frozen_programs()
        if not sandbox.thaw():
            evidence.detail = "the engine did not unpause the sandbox: killed, nothing collected"
            return evidence, *artifacts
        user, wait = SANDBOX_USER, deadline - time.monotonic()
        finished, failure = bounded(sandbox.kill_programs, min(CLEAR_WAIT_S, max(0.0, wait)))
        if not finished:
            evidence.detail = "the program's processes were not cleared in time: killed, nothing collected"
            return evidence, *artifacts
        if failure is None:  # kill_programs answers nothing when it cleared them
            evidence.programs_killed = True
        else:
            exc = failure
            # E.g. a fork bomb under gVisor: its processes hold every slot the sandbox user has, so
            # nothing of that user can start. The collector runs beside them as another, unprivileged
            # user (it reads hostile directories by design); files only the sandbox user may read are
            # then missing, and the evidence says so.
            user = FALLBACK_COLLECTOR_USER
            evidence.detail = (
                f"the program's processes could not be cleared ({exc}); the files were collected beside "
                f"them as user {FALLBACK_COLLECTOR_USER} (files only the sandbox user may read are missing)"
            )
        left = deadline - time.monotonic()
        if not evidence.programs_killed:
            left = min(left, BESIDE_COLLECT_S)
        if collect and left > 0:
            sandbox.collect_error = ""
            artifacts = sandbox.collect_artifacts(left, directory, user)
            evidence.collected = not sandbox.collect_error
            if sandbox.collect_error:
                state = (
                    "" if sandbox.container_state().get("Running") else " (the sandbox had stopped under the program)"
                )
                evidence.detail = f"the files could not be collected{state}: {sandbox.collect_error}"
        elif collect:
            evidence.detail = "no time was left to collect /output"
        return evidence, *artifacts
    except Exception as exc:  # never into the run: the stop must happen
        log.exception("evidence of sandbox %s", sandbox.container_id[:12])
        evidence.detail = f"evidence step failed: {type(exc).__name__}"
        return evidence, *artifacts
    finally:
        sandbox.kill()
        evidence.total_ms = (time.monotonic() - started) * 1000
