"""Keep the evidence of a sandbox stopped for safety before it is killed and removed.

A plain stop SIGKILLs the container, and with it go /output (a tmpfs) and the processes. For a
safety rule or an emergency stop (``Command.STOP_KEEPING_EVIDENCE``) the runner instead:

1. freezes the sandbox: from here on the program makes no progress, so the stop is not delayed by
   what follows. Under gVisor (with its runsc on this host) every process inside is SIGSTOPped
   (``runsc kill --all STOP``); else the engine's pause (bounded by ``FREEZE_WAIT_S``; a freeze that
   fails kills at once);
2. reads the process view while frozen (what ran at the stop);
3. SIGKILLs the program's processes while they make no progress: under runc host signals to the
   frozen processes, then the thaw; under gVisor ``runsc kill`` to each stopped process, the top of
   the tree first and init stopped meanwhile, so that none is reaped before all are killed (gVisor
   wakes a stopped process group when one of it is reaped: ``Sandbox._kill_stopped_top_down``).
   runsc refuses a paused sandbox, which is why gVisor is stopped by signal, not paused: a fork bomb
   holds every process slot of the sandbox user, so nothing of that user could start to clear it,
   and once thawed it would run again and, within seconds, take the sandbox down. The reaper then
   clears whatever is left and proves there is room for the collector;
4. collects /output through the usual collector, as the sandbox user, with the usual caps (hostile
   input, parsed as such). When the reaper could not start (a sandbox paused rather than stopped),
   the collector runs as ``nobody`` beside the program's processes;
5. kills the container. The whole step is bounded by ``SANDBOX_EVIDENCE_DEADLINE_S``; a thaw that
   fails kills at once and says so in ``Evidence.detail``. Where the program could run again (a
   paused sandbox after its thaw), the reaper gets ``CLEAR_WAIT_S`` and a collection beside processes
   that could not be cleared ``BESIDE_COLLECT_S``, so it never runs more than about 5 s.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

from apps.sandboxing.engine_runtime import is_gvisor
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
# Killing stopped processes one by one (gVisor: a level of their tree at a time) may use the deadline
# but this much, left for the reaper and the collector: nothing of the program runs meanwhile.
STOPPED_RESERVE_S = 3.0


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


def freeze(sandbox: Sandbox, evidence: Evidence) -> None:
    """Make the program stop making progress, the best way this host allows; sets ``evidence.frozen``.

    Under gVisor (with its runsc on this host) every process inside is SIGSTOPped first
    (``Sandbox.stop_inside``): they can then be SIGKILLed while stopped, which a paused gVisor sandbox
    refuses. Else the engine's pause, waited for at most ``FREEZE_WAIT_S``; under runc, when the
    pause fails (its freezer can, under a fork bomb), the processes are SIGSTOPped from the host."""
    gvisor = is_gvisor(sandbox.profile.engine_runtime)
    if gvisor and sandbox.can_stop_inside() and stop_bounded(sandbox):
        evidence.frozen, evidence.frozen_by = True, "sigstop"
    elif freeze_bounded(sandbox):
        evidence.frozen, evidence.frozen_by = True, "pause"
    elif not gvisor and not sandbox.frozen and sandbox.can_stop_inside() and stop_bounded(sandbox):
        evidence.frozen, evidence.frozen_by = True, "sigstop"


def stop_bounded(sandbox: Sandbox) -> bool:
    """``sandbox.stop_inside()``, waited for at most ``FREEZE_WAIT_S``."""
    finished, stopped = bounded(sandbox.stop_inside, FREEZE_WAIT_S)
    return finished and stopped is True


def clear_frozen(sandbox: Sandbox, evidence: Evidence, deadline: float) -> bool:
    """SIGKILL the program's processes while they make no progress (runc: host signals to the frozen
    processes; gVisor: ``runsc kill`` to the stopped ones), then thaw a paused sandbox. False when the
    engine would not thaw it (nothing can be collected then)."""
    if evidence.frozen_by == "sigstop":  # they stay stopped meanwhile: the kills may take longer
        sandbox.kill_stopped_programs(min(deadline, max(time.monotonic() + CLEAR_WAIT_S, deadline - STOPPED_RESERVE_S)))
        return True
    sandbox.kill_frozen_programs()
    return sandbox.thaw()


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
        freeze(sandbox, evidence)
        if not evidence.frozen:
            evidence.detail = (
                "the engine did not pause the sandbox (it refused, or not within the bound): "
                "killed at once, nothing collected"
            )
            state = sandbox.container_state()
            if state and not state.get("Running"):
                ran_out = " (out of memory as a whole)" if state.get("OOMKilled") else ""
                evidence.detail = f"the sandbox had stopped{ran_out} before the stop took hold: nothing to collect"
            return evidence, *artifacts
        evidence.freeze_ms = round((time.monotonic() - started) * 1000, 1)
        evidence.processes = [p.as_dict() for p in sandbox.process_view()[:MAX_PROCESSES_KEPT]]
        if not clear_frozen(sandbox, evidence, deadline):
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
            # E.g. a fork bomb whose processes hold every slot the sandbox user has (paused, not
            # stopped: gVisor without its runsc here), so nothing of that user can start. The collector
            # runs beside them as another, unprivileged user (it reads hostile directories by design);
            # files only the sandbox user may read are then missing, and the evidence says so.
            user = FALLBACK_COLLECTOR_USER
            evidence.detail = (
                f"the program's processes could not be cleared ({exc}); the files were collected beside "
                f"them as user {FALLBACK_COLLECTOR_USER} (files only the sandbox user may read are missing)"
            )
        left = deadline - time.monotonic()
        if not evidence.programs_killed and evidence.frozen_by != "sigstop":
            left = min(left, BESIDE_COLLECT_S)  # they run again beside the collector: not for long
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
        try:
            sandbox.kill()
        except Exception as exc:  # e.g. the engine's call timed out: the caller still removes the container
            log.warning("kill of sandbox %s after its evidence: %s", sandbox.container_id[:12], exc)
            evidence.detail = evidence.detail or f"the engine's kill failed: {type(exc).__name__}"
        evidence.total_ms = (time.monotonic() - started) * 1000
