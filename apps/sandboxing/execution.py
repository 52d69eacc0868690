"""One program delivered into a started sandbox and supervised until it ends.

``execute(sandbox, request, ...)`` is what a caller uses (the runner once per fresh sandbox; a
session could call it for each program in one sandbox). ``Execution.run`` takes three steps:

1. ``deliver``: an exec of the launcher (the helper's ``launch``, ``helper.py``; the runtime's argv as its
   arguments, no shell, no user data in argv) is sent the payload (code, stdin, and a nonce of 16
   random bytes made for this program) on its stdin. The launcher forks: its child writes the code
   file, sets up stdin, writes ``MARKER`` and execs the runtime; the parent waits for it, then writes
   the trailer (the nonce, the exit status, whether /output is empty) to stdout and to stderr.
2. ``supervise``: the calling thread reads the engine's multiplexed stream itself (no reader
   thread, bounded buffers, chunks of at most 64 KiB, never waiting for a newline). Once the trailer
   has come on both streams the program has ended, its output is complete, and its exit status is
   the trailer's: nothing more is asked of the engine. Between reads it takes small named steps:
   watch the exec's state (the way a program's end is learnt when no trailer comes: the program
   killed the launcher, or closed its stdout early, or left a child holding it open), obey
   ``control()`` about every 0.1 s, end a cancel's grace, enforce the wall-clock timeout from the
   host, and sample resources about once a second.
3. ``conclude``: the verdict (an OOM kill from the kernel's counters, an engine restart from the
   engine's event log) and, when the program ended by itself or within a cancel's grace, the
   artifacts it left in /output: none to collect when the trailer says /output is empty, else
   the collector's exec reads them.

Without a trailer (a killed sandbox, a launcher its program killed, a broken stream) every step is
as it was before the trailer existed: the exec's exit code from the engine, a drain, the collector.

On a sandbox with a serve exec (``Sandbox.serving``: a batch's sandbox handed over in this process)
step 1 is a launch frame (``helper.launch_frame``) on that exec instead of a new one, and the marker
carries the program's nonce (``serve_marker``: the stream is shared with what earlier programs left).
The program's end, exit status and empty /output come only from its trailer; without one the run ends
as above (the serve exec's exit code, e.g. 137 when the program killed it) and the serve exec is
given up (``Sandbox.stop_serving``), so the sandbox is not reused.

Every callback (``on_output``, ``control``, ``on_sample``) is called from the calling thread. What
belongs to one program lives here; what belongs to the container (killing, counters, removal)
lives on the ``Sandbox``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from django.conf import settings

from apps.sandboxing import engine_runtime, evidence, helper, seccomp_bpf
from apps.sandboxing.cgroups import Reading
from apps.sandboxing.outcomes import Command, Evidence, Failure, Outcome, ResourceSample, RunRequest, RunResult
from apps.sandboxing.policy import CODE_DIR, ENVIRONMENT, MIB, OUTPUT_DIR, WORK_DIR, host_pids_limit
from apps.sandboxing.sandbox import ExecStream, Sandbox, SandboxSetupError
from apps.sandboxing.streams import STDERR, STDOUT, ProtocolError, Trailer, TrailerWatch

log = logging.getLogger(__name__)

MARKER = b"\x00crucible:go\x00"  # the launcher's last write: what follows on stdout is the program's


def serve_marker(nonce: bytes) -> bytes:
    """The marker of a program on a serve exec: with its nonce, so that what a program before it left
    running cannot forge its start (the stream is the same for every program of the sandbox)."""
    return MARKER[:-1] + b":" + nonce.hex().encode() + b"\x00"


CONTROL_EVERY_S = 0.1
# Without its trailer (the launcher killed) and with its stream still open (a child holds it), a
# program's end is learnt by asking the engine: this often (and on every turn for a moment after its
# stream ended). An engine that cannot answer makes the run an engine fault (``Sandbox.main_state``,
# ``exec_state``), so an engine restart does not depend on when the run asked. Four times a second was
# a fifth of a supervising worker's CPU while its program only slept.
INSPECT_EVERY_S = 1.0
SAMPLE_EVERY_S = 1.0
READ_WAIT_S = 0.05  # the longest a read waits for output before the other steps get their turn
READ_WAIT_EXITED_S = 0.02
AFTER_EOF_FAST_S = 0.5  # after the stream ended: inspect the exec on every turn for this long
AFTER_EOF_WAIT_S = 0.01
AFTER_EOF_SLOW_WAIT_S = 0.05
# The program has exited: its output is complete at the stream's end, which the engine sends once
# no process holds the output open. Wait for it this long at most (a child the program left behind
# may hold it open forever). Stopping at the first quiet moment instead lost the last lines of a
# program that wrote and exited at once on a busy engine.
DRAIN_MAX_S = 1.0
KILL_UNANSWERED_S = 5.0
SIGKILL_EXIT = 128 + 9
STOPPED_STATE_WAIT_S = 2.0  # for the engine to record how a stopping container ended
DYING_SANDBOX_WAIT_S = 0.5  # under gVisor, for a sandbox whose exec reported an abnormal exit to stop
OOM_EVENT_WAIT_S = 0.5  # under gVisor, for the "oom" event of an attached sandbox that stopped (it can be late)
HOST_TASKS_NEAR_CAP = 0.8  # a sandbox that stopped with this share of its host pids cap in use hit it
ENGINE_STOP_SIGNALS = (9, 15)  # how an engine stop or restart ends the processes of its containers
LAUNCHER_STDERR_BYTES = 2048
LAUNCHER_DETAIL_CHARS = 500
PAYLOAD_SEND_MIN_TIMEOUT_S = 1.0


class SandboxStopped(Exception):
    """The sandbox container stopped under the program for a reason that is not the program's."""


def execute(
    sandbox: Sandbox,
    request: RunRequest,
    *,
    on_output: Callable[[str, bytes], None],
    control: Callable[[], Command | None],
    on_sample: Callable[[ResourceSample], None] | None = None,
    attach: bool = False,
) -> RunResult:
    """Deliver ``request``'s program into ``sandbox``, supervise it to its end, say how it ended (never raises).

    A compiled runtime's program is compiled first (``compile_step``), then run from ``BUILD_DIR``.
    ``attach``: the sandbox runs this program only; when its main process awaits one
    (``Sandbox.attachable``) the program goes to it over ``attach``, not by exec.
    """
    if request.runtime.compiled:
        result = compile_then_run(sandbox, request, on_output, control, on_sample)
    else:
        result = Execution(sandbox, request, on_output, control, on_sample, attach=attach).run()
    result.engine_runtime = sandbox.profile.engine_runtime
    return result


def compile_step(request: RunRequest) -> RunRequest:
    """The compile step of ``request``: the compiler as the program, its own time and memory, no stdin."""
    runtime = request.runtime
    return replace(
        request,
        runtime=replace(runtime, command=list(runtime.compile_command), compile_command=[]),
        args=(),
        env={},
        stdin=b"",
        limits=replace(request.limits, timeout_s=runtime.compile_timeout_s, memory_mb=runtime.compile_memory_mb),
        collect_artifacts=False,
    )


def _memory_refused(sandbox: Sandbox, step: RunRequest) -> RunResult | None:
    """Give the sandbox ``step``'s memory limit; the failed result when it cannot be set (fail closed)."""
    try:
        sandbox.set_memory(step.limits.memory_mb)
    except SandboxSetupError as exc:
        return RunResult.failed(exc.failure, str(exc), image_id=sandbox.image_id)
    return None


def compile_then_run(sandbox, request, on_output, control, on_sample) -> RunResult:
    """Compile, then (when the compiler exited 0 and the sandbox lives) run what it built.

    The compiler's output (both streams) is the program's stderr, before anything the program
    writes, and counts against the output cap. A compiler that exits non-zero ends the run as
    ``Outcome.COMPILE_ERROR``; one that runs out of time or memory ends it as a program would.
    Each step runs under its own memory limit (``Sandbox.set_memory``).
    """

    def compiler_output(_stream: str, data: bytes) -> None:
        on_output("stderr", data)

    step = compile_step(request)
    refused = _memory_refused(sandbox, step)
    if refused is not None:
        return refused
    oom_kills_before = sandbox.read_counters().oom_kills or 0
    compiled = Execution(sandbox, step, compiler_output, control, on_sample).run()
    compile_ms = compiled.duration_ms
    if compiled.outcome is not Outcome.EXITED or compiled.exit_code != 0 or sandbox.killed:
        if compiled.outcome is Outcome.EXITED:
            # A compiler driver outlives its OOM-killed pass (gcc's cc1) and exits 1: still memory.
            ran_out = (sandbox.last_reading.oom_kills or 0) > oom_kills_before
            compiled.outcome = Outcome.OOM_KILLED if ran_out else Outcome.COMPILE_ERROR
        compiled.compile_ms = compile_ms
        return compiled
    left = max(0, request.limits.output_cap_bytes - compiled.output_bytes)
    run_step = replace(request, files={}, limits=replace(request.limits, output_cap_bytes=left))
    refused = _memory_refused(sandbox, run_step)
    if refused is not None:
        return refused
    result = Execution(sandbox, run_step, on_output, control, on_sample, write_code=False).run()
    result.output_bytes += compiled.output_bytes
    result.compile_ms = compile_ms
    return result


def _now() -> datetime:
    return datetime.now(UTC)


def exit_signal(exit_code: int | None) -> int | None:
    """The signal that ended a program, from its shell-style exit code (128 + signal)."""
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        return exit_code - 128
    return None


def as_command(answer) -> Command | None:
    """``control()``'s answer as a ``Command``. An answer that is not one stops the program (fail closed)."""
    if answer is None or isinstance(answer, Command):
        return answer
    try:
        return Command(answer)
    except ValueError:
        log.warning("control() answered %r, which is no Command: stopping the program", answer)
        return Command.STOP


@dataclass
class ProgramOutput:
    """The program's bytes on their way to ``on_output``: only after the launcher's marker and before
    its trailer, up to the cap.

    The launcher writes the marker to both streams just before it starts the program, and the trailer
    to both once it has ended: the engine copies the two streams independently, so a program's stderr
    can arrive before its stdout's marker, and only each stream's own marker and trailer tell what on
    it is the program's. Trailer bytes never count against the cap.
    """

    cap: int
    on_output: Callable[[str, bytes], None]
    trailer_start: bytes  # ``helper.trailer_start`` of the run's nonce
    marker: bytes = MARKER  # ``serve_marker`` of the run's nonce on a serve exec
    marker_left: bytes = b""
    stderr_marker_left: bytes | None = b""  # None: stderr is the launcher's complaint
    launcher_stderr: bytearray = field(default_factory=bytearray)
    delivered: int = 0
    truncated: bool = False
    ends: dict[int, TrailerWatch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.marker_left = self.stderr_marker_left = self.marker
        self.ends = {STDOUT: TrailerWatch(self.trailer_start), STDERR: TrailerWatch(self.trailer_start)}

    @property
    def program_started(self) -> bool:
        return not self.marker_left

    @property
    def ended(self) -> Trailer | None:
        """What the trailer says once it has come, the same, on both streams (None until then, or ever
        when one is broken or they differ: the program's end is then learnt the old way)."""
        stdout, stderr = self.ends[STDOUT], self.ends[STDERR]
        if stdout.trailer is not None and stdout.trailer == stderr.trailer:
            return stdout.trailer
        return None

    def release(self) -> None:
        """No trailer will come any more: pass on what each stream held back in case one began."""
        for stream, end in self.ends.items():
            self._deliver(stream, end.release())

    def launcher_complaint(self) -> str:
        return bytes(self.launcher_stderr).decode("utf-8", "replace").strip()[:LAUNCHER_DETAIL_CHARS]

    def feed(self, stream: int, data: bytes) -> None:
        """Pass one piece on; raises ``ProtocolError`` when stdout does not start with the marker."""
        if stream == STDERR and self.stderr_marker_left != b"":
            data = self._past_stderr_marker(data)
        elif stream != STDERR and self.marker_left:
            data = self._past_marker(data)
        if data and stream in self.ends:
            data = self.ends[stream].feed(data)
        self._deliver(stream, data)

    def _deliver(self, stream: int, data: bytes) -> None:
        if not data or self.truncated:
            return
        room = self.cap - self.delivered
        if len(data) > room:
            data, self.truncated = data[:room], True
        if data:
            self.delivered += len(data)
            self.on_output("stdout" if stream == STDOUT else "stderr", data)

    def _past_marker(self, data: bytes) -> bytes:
        take = data[: len(self.marker_left)]
        if take != self.marker_left[: len(take)]:
            raise ProtocolError("the launcher did not start the program")
        self.marker_left = self.marker_left[len(take) :]
        return data[len(take) :]

    def _past_stderr_marker(self, data: bytes) -> bytes:
        """Stderr that is not the marker is the launcher's complaint (it exits after complaining)."""
        if self.stderr_marker_left is None:
            self._complaint(data)
            return b""
        take = data[: len(self.stderr_marker_left)]
        if take != self.stderr_marker_left[: len(take)]:
            self._complaint(self.marker[: len(self.marker) - len(self.stderr_marker_left)] + data)
            self.stderr_marker_left = None
            return b""
        self.stderr_marker_left = self.stderr_marker_left[len(take) :]
        return data[len(take) :]

    def _complaint(self, data: bytes) -> None:
        self.launcher_stderr += data[: max(0, LAUNCHER_STDERR_BYTES - len(self.launcher_stderr))]


@dataclass
class Execution:
    """One program in one sandbox, from delivery to verdict; ``run`` is the whole of it."""

    sandbox: Sandbox
    request: RunRequest
    on_output: Callable[[str, bytes], None]
    control: Callable[[], Command | None]
    on_sample: Callable[[ResourceSample], None] | None
    write_code: bool = True  # False: the code file is in place already (the run step of a compiled program)
    ended_by: Outcome | None = None  # why the runner ended the program: timed out, cancelled, stopped, capped
    exec_id: str = ""
    exited: bool = False
    exit_code: int | None = None
    now: float = 0.0
    start: float = 0.0
    eof_at: float | None = None
    exited_at: float | None = None
    grace_end: float | None = None
    controlled_at: float = 0.0
    inspected_at: float = 0.0
    sampled_at: float = 0.0
    sampled_cpu_ns: int | None = None
    viewed_at: float = 0.0
    evidence: Evidence | None = None  # set when a stop kept the sandbox's evidence
    kept_artifacts: list = field(default_factory=list)  # what the evidence step collected from /output
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(helper.NONCE_BYTES))
    served: bool = False  # the program is a frame on the sandbox's serve exec (``Sandbox.serving``)
    attach: bool = False  # the sandbox runs this program only: over attach when its main process awaits one
    attached: bool = False  # the program is a frame to the sandbox's main process (``Sandbox.attach``)
    output: ProgramOutput = field(init=False)

    def __post_init__(self) -> None:
        self.served = self.sandbox.serving is not None
        sandbox = self.sandbox
        self.attached = self.attach and self.write_code and not self.served
        self.attached = self.attached and sandbox.attachable and not sandbox.attached
        trailer_start = helper.trailer_start(self.nonce)
        marker = serve_marker(self.nonce) if self.served else MARKER
        self.output = ProgramOutput(self.request.limits.output_cap_bytes, self.on_output, trailer_start, marker)

    @property
    def limits(self):
        return self.request.limits

    def run(self) -> RunResult:
        """How the program ended; a platform fault ends as ``Outcome.ERROR`` with its ``Failure``."""
        image_id = self.sandbox.image_id
        try:
            first = as_command(self.control())
            if first is not None:  # asked to end before it began: it never runs
                outcome = Outcome.CANCELLED if first is Command.CANCEL else Outcome.STOPPED
                return RunResult.not_run(outcome, image_id=image_id)
            return self._run()
        except ProtocolError as exc:
            return RunResult.failed(Failure.ENGINE_FAULT, f"sandbox protocol error: {exc}", image_id=image_id)
        except SandboxStopped as exc:
            return RunResult.failed(Failure.ENGINE_FAULT, str(exc), image_id=image_id)
        except Exception as exc:
            log.exception("run %s failed", self.request.run_id)
            return RunResult.failed(
                Failure.ENGINE_FAULT, f"runner failure: {type(exc).__name__}: {exc}", image_id=image_id
            )

    def _run(self) -> RunResult:
        baseline_cpu = self.sandbox.read_counters().cpu_ns or 0
        argv, stream = self.deliver()
        started_at, self.start = _now(), time.monotonic()
        try:
            code, files = (self.request.code, self.request.files) if self.write_code else (b"", {})
            payload = helper.pack_payload(code, self.request.stdin, self.seccomp_filter(), files, nonce=self.nonce)
            framed = self.served or self.attached
            if framed:
                payload = helper.launch_frame(WORK_DIR, argv, payload)
            try:
                stream.send(payload, max(PAYLOAD_SEND_MIN_TIMEOUT_S, self.limits.timeout_s), then_close=not framed)
            except OSError as exc:
                if not self.served:
                    raise
                self.sandbox.stop_serving(f"the program's frame could not be sent: {exc}")
            self.supervise(stream)
            self.output.release()
        finally:
            if self.served and (self.output.ended is None or self.sandbox.killed):
                # Anything but a whole trailer: the serve exec is not trusted again (the sandbox goes).
                self.sandbox.stop_serving("its program ended without a trailer")
            elif not self.served and not self.attached:
                self.sandbox.close_exec(stream)
        finished_at, duration_s = _now(), time.monotonic() - self.start
        try:
            return self.conclude(started_at, finished_at, duration_s, baseline_cpu)
        finally:
            if self.attached:
                # The main process waits for this: once the counters are read and /output collected,
                # it exits and the container stops by itself.
                self.sandbox.close_exec(stream)

    # --- 1. deliver --------------------------------------------------------------------------
    def seccomp_filter(self) -> bytes:
        """The profile as BPF for the launcher to install, where the engine does not apply it to exec'd
        programs itself (gVisor); empty under runc, whose engine applies it to every process."""
        if engine_runtime.is_gvisor(self.sandbox.profile.engine_runtime):
            return seccomp_bpf.program()
        return b""

    def deliver(self) -> tuple[list[str], ExecStream]:
        """Start the launcher for this request's runtime; it waits for the payload on its stdin (or,
        ``served``, the serve exec waits for the program's frame). Returns the launcher's argv too."""
        runtime = self.request.runtime
        code_path = f"{CODE_DIR}/{runtime.file_name}"
        environment = {**self.request.env, **runtime.program_environment()}  # the platform's win
        delivered_to = code_path if self.write_code else f"{CODE_DIR}/"
        command = [*runtime.argv(code_path), *self.request.args]
        argv = helper.launch_argv(delivered_to, self.output.marker, environment, command, OUTPUT_DIR)
        ahead = helper.prestart_command(command, code_path) if self.write_code else None
        self.sandbox.prestart = (
            helper.Prestart(
                WORK_DIR,
                tuple(helper.launch_argv(code_path, b"", environment, command, OUTPUT_DIR)),
                ahead,
                self.seccomp_filter(),
            )
            if ahead
            else None
        )
        if self.attached:
            try:
                return argv, self.sandbox.attach()
            except Exception as exc:
                # Nothing reached the main process, which waits as the idle one would: the same sandbox,
                # as clean as it was created, takes the program by exec instead.
                log.warning("cannot attach to %s, delivering by exec: %s", self.sandbox.container_id[:12], exc)
                self.attached = False
        self.exec_id, stream = self.sandbox.launch(argv, workdir=WORK_DIR, environment=dict(ENVIRONMENT))
        return argv, stream

    # --- 2. supervise ------------------------------------------------------------------------
    def supervise(self, stream: ExecStream) -> None:
        """Read output and take the named steps until the program has ended (or been killed)."""
        self.controlled_at = self.inspected_at = self.sampled_at = self.start
        while True:
            self.receive(stream)
            self.now = time.monotonic()
            self.watch_exec()
            if self.exited:
                if self.drained():
                    return
                continue
            if self.kill_unanswered():
                return
            for step in (self.obey_control, self.end_grace, self.enforce_timeout, self.sample):
                if self.sandbox.killed:
                    break
                step()

    def receive(self, stream: ExecStream) -> None:
        """Pass on what the program wrote, or pause once its stream has ended."""
        now = time.monotonic()
        if self.eof_at is None and self.sandbox.killed:
            self.eof_at = now  # kill() closed the stream
        if self.eof_at is not None:
            time.sleep(AFTER_EOF_WAIT_S if now - self.eof_at < AFTER_EOF_FAST_S else AFTER_EOF_SLOW_WAIT_S)
            return
        pieces = stream.read(READ_WAIT_EXITED_S if self.exited else READ_WAIT_S)
        if pieces is None:
            self.eof_at = now
            return
        for kind, piece in pieces:
            self.output.feed(kind, piece)
            if self.output.truncated:
                self.end_now(Outcome.OUTPUT_CAPPED)

    def watch_exec(self) -> None:
        """Has the program ended? The trailer says so; without one, ask the engine whether the exec still
        runs: often right after its stream ended or a kill."""
        if self.exited:
            return
        ended = self.output.ended
        if ended is not None:
            self.exited, self.exit_code, self.exited_at = True, ended.exit_code, self.now
            return
        just_ended = self.eof_at is not None and self.now - self.eof_at < AFTER_EOF_FAST_S
        if just_ended or self.sandbox.killed or self.now - self.inspected_at >= INSPECT_EVERY_S:
            self.inspected_at = self.now
            if self.attached:
                running, exit_code = self.sandbox.main_state()
            else:
                running, exit_code = self.sandbox.exec_state(self.exec_id)
            if self.sandbox.exec_lost and self.sandbox.killed:
                exit_code = SIGKILL_EXIT  # it ended with the container we killed
            if not running:
                self.exited, self.exit_code, self.exited_at = True, exit_code, self.now

    def drained(self) -> bool:
        """The program has exited: is its output all read? (A child may hold the stream open.) The
        trailer comes after all of it."""
        if self.eof_at is not None or self.sandbox.killed or self.output.ended is not None:
            return True
        return self.now - self.exited_at >= DRAIN_MAX_S

    def kill_unanswered(self) -> bool:
        killed_at = self.sandbox.killed_at
        if killed_at is not None and self.now - killed_at > KILL_UNANSWERED_S:
            log.warning(
                "exec in %s still reported running %g s after SIGKILL",
                self.sandbox.container_id[:12],
                KILL_UNANSWERED_S,
            )
            return True
        return False

    def obey_control(self) -> None:
        """``Command.STOP``: SIGKILL now. ``Command.CANCEL``: SIGTERM, and SIGKILL when the grace ends."""
        if self.now - self.controlled_at < CONTROL_EVERY_S:
            return
        self.controlled_at = self.now
        command = as_command(self.control())
        if command is Command.STOP:
            self.ended_by = Outcome.STOPPED
            self.sandbox.kill()
        elif command is Command.STOP_KEEPING_EVIDENCE and not self.sandbox.killed:
            self.ended_by = Outcome.STOPPED
            self.evidence, *self.kept_artifacts = evidence.preserve(
                # After a stop no later program will collect /output: keep it now, whatever the request said.
                self.sandbox,
                collect=True,
                started=self.now,
            )
        elif command is Command.CANCEL and self.ended_by is None:
            self.ended_by = Outcome.CANCELLED
            self.grace_end = self.now + self.limits.kill_grace_s
            if self.limits.kill_grace_s > 0:
                self.sandbox.terminate_programs()
            else:
                self.sandbox.kill()

    def end_grace(self) -> None:
        if self.grace_end is not None and self.now >= self.grace_end:
            self.sandbox.kill()

    def enforce_timeout(self) -> None:
        if self.now - self.start >= self.limits.timeout_s:
            self.end_now(Outcome.TIMED_OUT)

    def sample(self) -> None:
        """Report memory, pids and the CPU share since the last sample, about once a second."""
        elapsed = self.now - self.sampled_at
        if elapsed < SAMPLE_EVERY_S:
            return
        reading = self.sandbox.read_counters()
        cpu_percent = 0.0
        if reading.cpu_ns is not None and self.sampled_cpu_ns is not None:
            cpu_percent = max(0.0, (reading.cpu_ns - self.sampled_cpu_ns) / (elapsed * 1e9) * 100)
        self.sampled_cpu_ns, self.sampled_at = reading.cpu_ns, self.now
        if self.on_sample is not None:
            self.on_sample(
                ResourceSample(
                    at=_now(),
                    cpu_percent=round(cpu_percent, 1),
                    memory_bytes=reading.memory_bytes or 0,
                    pids=reading.pids or 0,
                    processes=self.process_names(),
                )
            )

    def process_names(self) -> list[str] | None:
        """The names of the sandbox's processes, every ``SANDBOX_PROCESS_VIEW_EVERY_S`` (None between)."""
        every = settings.SANDBOX_PROCESS_VIEW_EVERY_S
        if every <= 0 or self.now - self.viewed_at < every:
            return None
        self.viewed_at = self.now
        return [process.name for process in self.sandbox.process_view()]

    def end_now(self, reason: Outcome) -> None:
        """End the program with SIGKILL; the first reason to end it is the one reported."""
        if self.ended_by is None:
            self.ended_by = reason
        self.sandbox.kill()

    # --- 3. conclude -------------------------------------------------------------------------
    def conclude(self, started_at: datetime, finished_at: datetime, duration_s: float, baseline_cpu: int) -> RunResult:
        sandbox = self.sandbox
        if not self.output.program_started and self.ended_by is None:
            if self.exit_code is None and sandbox.container_gone():
                # No launcher's fault: its container went under it (e.g. a batch's kept sandbox the
                # reconciler removed as it was handed over). The program never started: run it again.
                return RunResult.failed(
                    Failure.ENGINE_FAULT,
                    "runner failure: the sandbox's container was removed under the run",
                    image_id=sandbox.image_id,
                )
            detail = f"the launcher failed in the sandbox (exit {self.exit_code}): {self.output.launcher_complaint()}"
            return RunResult.failed(Failure.LAUNCHER, detail, image_id=sandbox.image_id)
        reading = sandbox.read_counters()
        outcome = self.verdict(reading)
        signal = exit_signal(self.exit_code)
        if outcome is Outcome.EXITED and signal in ENGINE_STOP_SIGNALS and sandbox.engine_lost():
            # Killed with its container by an engine stop or restart, not by the program itself.
            return RunResult.failed(
                Failure.ENGINE_FAULT,
                "runner failure: the Docker engine restarted under the run",
                image_id=sandbox.image_id,
            )
        ended = self.output.ended
        # An attached program that ended its sandbox's main process stopped the container: /output went
        # with it (no collector can run), which the record says (the list may be incomplete).
        main_lost = self.attached and ended is None and not sandbox.killed and self.request.collect_artifacts
        collect = self.request.collect_artifacts and not sandbox.killed and not (ended and ended.output_empty)
        collect = collect and not main_lost
        artifacts, artifacts_truncated, skipped = sandbox.collect_artifacts() if collect else ([], main_lost, 0)
        if self.evidence is not None:
            artifacts, artifacts_truncated, skipped = self.kept_artifacts
        cpu_ns = reading.cpu_ns
        return RunResult(
            outcome=outcome,
            exit_code=self.exit_code,
            signal=signal,
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=int(duration_s * 1000),
            output_bytes=self.output.delivered,
            output_truncated=self.output.truncated,
            peak_memory_bytes=reading.peak_memory_bytes,
            cpu_time_ms=None if cpu_ns is None else max(0, cpu_ns - baseline_cpu) // 1_000_000,
            artifacts=artifacts,
            artifacts_truncated=artifacts_truncated,
            artifacts_skipped_names=skipped,
            image_id=sandbox.image_id,
            evidence=self.evidence,
        )

    def verdict(self, reading: Reading) -> Outcome:
        """How the program ended: the runner's reason, an OOM kill, or by itself."""
        if self.ended_by is not None:
            return self.ended_by
        if self.attached and self.output.ended is None and not self.sandbox.killed:
            return self.verdict_of_a_lost_main_process()
        if not self.sandbox.killed and (self.sandbox.exec_lost or self.sandbox_died_under_gvisor()):
            return self.verdict_of_a_stopped_sandbox()
        if self.exit_code not in (SIGKILL_EXIT, None):
            return Outcome.EXITED
        if self.sandbox.cgroup.available:
            return Outcome.OOM_KILLED if (reading.oom_kills or 0) > 0 else Outcome.EXITED
        self.sandbox.kill()  # the engine records an OOM kill on the container, once it has stopped
        return Outcome.OOM_KILLED if self.sandbox.oom_killed_by_engine() else Outcome.EXITED

    def sandbox_died_under_gvisor(self) -> bool:
        """Under gVisor an exec whose sandbox died may still report an exit (128, from runsc's own
        wait): an abnormal exit code is checked against the container, which must still be running."""
        if (self.exit_code or 0) < 128 or not engine_runtime.is_gvisor(self.sandbox.profile.engine_runtime):
            return False
        return not self.sandbox.stopped_state(DYING_SANDBOX_WAIT_S).get("Running", True)

    def verdict_of_a_lost_main_process(self) -> Outcome:
        """An attached program ended without a trailer: the main process that ran it is gone, and the
        container stopped with it (its exit code is the program's). The sandbox user may kill that
        process (the program killed its launcher, as in ``kill(-1, SIGKILL)``), or it could not fork
        and ran the program in its own process: the program's doing either way, never a platform
        fault. Only an OOM kill the engine recorded (under gVisor the limit covers its kernel; there its
        "oom" event is waited for a moment, as it may come after the state was written) says
        otherwise; an engine restart is told apart from the exit code in ``conclude``."""
        state = self.sandbox.stopped_state(STOPPED_STATE_WAIT_S)
        gvisor = engine_runtime.is_gvisor(self.sandbox.profile.engine_runtime)
        if state.get("OOMKilled") or (gvisor and self.sandbox.oom_event_recorded(OOM_EVENT_WAIT_S)):
            reading = self.sandbox.last_reading
            reading.peak_memory_bytes = max(reading.peak_memory_bytes or 0, self.limits.memory_mb * MIB)
            return Outcome.OOM_KILLED
        if self.exit_code is None:
            self.exit_code = state.get("ExitCode")
        return Outcome.EXITED

    def verdict_of_a_stopped_sandbox(self) -> Outcome:
        """The whole sandbox stopped under the program, which the runner did not ask for.

        Under gVisor the sandbox's memory limit covers gVisor's own kernel, so running out of it
        stops the container (the engine records an OOM kill), and a program that makes gVisor need
        more host threads than ``SANDBOX_RUNSC_HOST_TASKS`` stops it too (its last pids reading is at
        that cap): both are the program's doing, reported as a kill. The engine does not always record
        the OOM kill (``Sandbox.killed_by_the_host_kernel``). Anything else is a platform fault.
        """
        self.exit_code = SIGKILL_EXIT
        state = self.sandbox.stopped_state(STOPPED_STATE_WAIT_S)
        pids = self.sandbox.last_reading.pids or 0
        at_tasks_cap = pids >= host_pids_limit(self.limits, self.sandbox.profile.engine_runtime) * HOST_TASKS_NEAR_CAP
        if state.get("OOMKilled") or (not at_tasks_cap and self.sandbox.killed_by_the_host_kernel(state)):
            # Its cgroup went with it; an OOM kill means the sandbox used all of its memory.
            reading = self.sandbox.last_reading
            reading.peak_memory_bytes = max(reading.peak_memory_bytes or 0, self.limits.memory_mb * MIB)
            return Outcome.OOM_KILLED
        if at_tasks_cap:
            return Outcome.EXITED
        raise SandboxStopped(f"the sandbox stopped under the program (engine state: {state.get('Status', '?')})")
