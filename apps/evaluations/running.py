"""Run one evaluation: claim it, prepare the sandbox request, execute it, conclude how it ended,
record everything and publish the end.

``EvaluationRun`` is one job's run, in named steps (the shape of NetBox's ``JobRunner``):
``claim`` -> ``prepare`` -> ``execute`` -> ``conclude`` -> ``record``. Each step either hands on to
the next or ends the run with a ``RunDisposition``, the job's typed return value.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from rq import get_current_job

from apps.evaluations import builds, dispatch, killswitch, publisher, reconciler, retries, services, testing, worker
from apps.evaluations.controller import Abandon, Controller
from apps.evaluations.dbretry import with_db_retry
from apps.evaluations.heartbeat import Heartbeat
from apps.evaluations.models import (
    Artifact,
    BuildStatus,
    Control,
    Evaluation,
    OutputChunk,
    Reason,
    Runtime,
    Status,
    TestResult,
)
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.retries import RetryDecision
from apps.monitoring import incidents
from apps.monitoring.models import RunTiming
from apps.monitoring.safety import SafetyMonitor
from apps.sandboxing import engine, image, runner, selfcheck, streams
from apps.sandboxing.engine_runtime import RuntimeUnknown
from apps.sandboxing.outcomes import Failure, Outcome
from apps.sandboxing.policy import Limits
from crucible.logcontext import bound

log = logging.getLogger(__name__)


class RunDisposition(StrEnum):
    """What one run job did with its evaluation."""

    MISSING = "missing"  # no such evaluation
    DEFERRED_KILL_SWITCH = "deferred_kill_switch"  # left queued: the kill switch is engaged
    DEFERRED_ENGINE_DOWN = "deferred_engine_down"  # left queued: the Docker engine does not answer
    AWAITING_RUNTIME = "awaiting_runtime"  # left queued off the queues: its runtime's image is being built
    NOT_CLAIMED = "not_claimed"  # a duplicate job, or it ended while queued (cancelled, stopped)
    FINISHED = "finished"  # its end is recorded; the row's status and reason say which
    REQUEUED = "requeued"  # a platform fault interrupted it: handed back for another attempt
    PLATFORM_FAULT = "platform_fault"  # a platform fault ended it (error, or the cancel/stop pending)
    SUPERSEDED = "superseded"  # the row was handed to another attempt: this job left it alone
    CRASHED = "crashed"  # an exception escaped the run; the retry policy decided if the database let it


DISPOSITION_FOR_RETRY = {
    RetryDecision.REQUEUED: RunDisposition.REQUEUED,
    RetryDecision.ENDED: RunDisposition.PLATFORM_FAULT,
}

# How an outcome ends the evaluation, where the outcome alone decides (see ``end_of``).
END_FOR_OUTCOME = {
    Outcome.TIMED_OUT: (Status.TIMED_OUT, Reason.TIMEOUT),
    Outcome.OOM_KILLED: (Status.OOM_KILLED, Reason.OOM),
    Outcome.OUTPUT_CAPPED: (Status.FAILED, Reason.OUTPUT_CAP),
    Outcome.COMPILE_ERROR: (Status.FAILED, Reason.COMPILE_ERROR),
    Outcome.CANCELLED: (Status.CANCELLED, Reason.CANCELLED),
    Outcome.ERROR: (Status.ERROR, Reason.ENGINE_ERROR),
}


# What a user reads in ``error`` when the platform failed; the engine's own words go to the log only.
PUBLIC_FAILURE = {
    Failure.SETUP_REFUSED: "the sandbox could not be set up: the engine refused it",
    Failure.ENGINE_FAULT: "the sandbox engine failed under the run",
    Failure.ENGINE_AWAY: "the sandbox engine could not be reached to start the run",
    Failure.LAUNCHER: "the program could not be started in the sandbox",
}
# A worker asks whether the engine answers before it claims a run; an answer this recent will do.
ENGINE_ANSWER_FRESH_S = 1.0
# A chain of samples in one job (``run``) reads its runtime's row again once it is this old: what an
# operator changes in it reaches the next sample within this time.
RUNTIME_ROW_FRESH_S = 2.0
CRASH_DETAIL = "platform error: the worker failed while running this evaluation (logged for the operators)"


def public_error(result: runner.RunResult) -> str:
    """The ``error`` a user may read for a run's result: ours, never the engine's or the database's text."""
    if result.failure is not None:
        return PUBLIC_FAILURE[result.failure]
    return result.error


def artifacts_notice(skipped_names: int, refused: int, truncated: bool) -> bytes:
    """The ``[crucible]`` line on stderr that says which files in /output were not kept, or b"" when all were."""
    left_out = skipped_names + refused
    if left_out:
        files = "1 file" if left_out == 1 else f"{left_out} files"
        return (
            f"\n[crucible] {files} in /output not kept: a path under /output may have at most "
            f"{streams.MAX_NAME_BYTES} bytes and {streams.MAX_DEPTH} levels.\n"
        ).encode()
    if truncated:
        return b"\n[crucible] some files in /output were not kept: they went over the artifact limits.\n"
    return b""


def end_of(outcome: Outcome, exit_code: int | None, requested: Control | None) -> tuple[Status, Reason]:
    """The status and reason a run's outcome gives the evaluation.

    A run a "stop" rule fired on ends ``safety_stopped`` however the program ended: the rule's
    decision is the record, even when the program got there first (a fork bomb that runs out of
    memory before the stop reaches it); its exit code and peak memory still say how it ended. Only a
    platform fault stays ``error``. A user's or an operator's stop wins only when it did the stopping.
    """
    if requested == Control.SAFETY_STOP and outcome != Outcome.ERROR:
        return Status.SAFETY_STOPPED, Reason.SAFETY_RULE
    if outcome == Outcome.STOPPED:
        return Status.STOPPED, Reason.STOPPED
    if outcome == Outcome.EXITED:
        return (Status.SUCCEEDED if exit_code == 0 else Status.FAILED), Reason.EXIT
    return END_FOR_OUTCOME[outcome]


def end_of_tests(result: runner.RunResult, verdicts: list[testing.TestVerdict], requested: Control | None):
    """The status and reason of an evaluation run under tests: passed or not, unless cut short."""
    if result.outcome != Outcome.EXITED or requested == Control.SAFETY_STOP:
        return end_of(result.outcome, result.exit_code, requested)
    if verdicts and all(v.passed for v in verdicts):
        return Status.SUCCEEDED, Reason.EXIT
    return Status.FAILED, Reason.TESTS_FAILED


def worker_name() -> str:
    job = get_current_job()
    if job is not None and job.worker_name:
        return job.worker_name
    return f"{socket.gethostname()}:{os.getpid()}"


def pool_owner() -> str | None:
    """The worker whose warm pool a run may take its sandbox from (None: no pool, start cold)."""
    job = get_current_job()
    if settings.SANDBOX_POOL_SIZE <= 0 or job is None or not job.worker_name:
        return None
    return job.worker_name


def run(evaluation_id: str) -> RunDisposition:
    """Run the evaluation; then, while its end keeps the next sample of its batch for this job (a
    sample that reuses its batch's sandbox, ``dispatch.keeping``), run that one here too, each with
    its own log context and the whole RQ timeout of a job of its own. Returns the first run's
    disposition (the job's); the others are logged."""
    disposition = None
    runtime: RuntimeRead | None = None
    while evaluation_id is not None:
        with bound(evaluation_id=evaluation_id), dispatch.keeping() as keep:
            this = EvaluationRun(evaluation_id, keep, runtime)
            outcome = this.handle()
            kept = None if worker.shutdown.is_set() else keep.take()
        runtime = this.runtime_read
        if disposition is None:
            disposition = outcome
        else:
            log.info("evaluation %s: %s, run in the job of a sample before it", evaluation_id, outcome)
        evaluation_id = None if kept is None else str(kept.evaluation_id)
        if kept is not None:
            rearm_job_timeout(kept.timeout)
    return disposition


def rearm_job_timeout(timeout_s: int) -> None:
    """Give the job's next run the whole limit of a job (RQ's death penalty is SIGALRM in the main
    thread); nothing when no death penalty is armed here (a run outside RQ)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return
    signal.alarm(max(1, int(timeout_s)))


@dataclass(frozen=True)
class RuntimeRead:
    """A runtime's row as a run read it, and when (monotonic): the next sample its job runs takes it
    as it is while ``RUNTIME_ROW_FRESH_S`` have not passed (one query less per chained sample)."""

    row: Runtime
    at: float


class EvaluationRun:
    """One job's run of one evaluation. Not reused: a retried evaluation gets a new job and a new run."""

    def __init__(self, evaluation_id: str, keep: dispatch.Keep | None = None, runtime: RuntimeRead | None = None):
        self.evaluation_id = evaluation_id
        self.keep = keep  # set for the batch once this run reuses its sandbox: its end may keep the next sample
        self.evaluation: Evaluation | None = None
        self.attempt = 0
        self.claimed_at: float | None = None  # monotonic, when this run's claim of the row succeeded
        self.heartbeat: Heartbeat | None = None
        self.recorder: OutputRecorder | None = None
        self.monitor: SafetyMonitor | None = None
        self.controller: Controller | None = None
        self.request: runner.RunRequest | None = None
        self.started = 0.0  # monotonic, when execute began (for the sandbox start time)
        self.ahead: runner.Ahead | None = None  # the sandbox got while the row is claimed
        self.runtime: Runtime | None = None  # the run's runtime row, once read (``runtime_row``)
        self.runtime_read = runtime  # the row read last in this job, by this run or the one before it
        self.disposition: RunDisposition | None = None
        self.verdicts: list[testing.TestVerdict] | None = None  # with tests: one per test, at the end
        self._captures: list[testing.Capture] = []  # what each test's program wrote, to judge it

    def handle(self) -> RunDisposition:
        not_claimed = self.claim()
        if not_claimed is not None:
            self._discard_ahead()
            return not_claimed
        publisher.publish_status(self.evaluation)
        self.heartbeat = Heartbeat(self.evaluation.pk, self.attempt)
        self.heartbeat.start()
        try:
            return self.prepare() or self.execute()
        except Exception as exc:
            log.exception("evaluation %s failed on the platform side", self.evaluation.pk)
            self._hand_over_crash(exc)
            return RunDisposition.CRASHED
        finally:
            self._discard_ahead()  # unless the run took it
            self.heartbeat.stop()

    # --- the steps ---------------------------------------------------------------------------

    def claim(self) -> RunDisposition | None:
        """queued -> running for this worker; or why the row is left as it is."""
        self.evaluation = Evaluation.objects.filter(pk=self.evaluation_id).first()
        if self.evaluation is None:
            return RunDisposition.MISSING
        if killswitch.is_engaged():
            # Taken off the queue just as the kill switch was engaged: leave the row queued; the
            # reconciler enqueues it again once the switch is released.
            return RunDisposition.DEFERRED_KILL_SWITCH
        if not engine.ping(fresh_for_s=ENGINE_ANSWER_FRESH_S):
            # The engine is down (restarting): leave the row queued rather than fail it; the
            # reconciler enqueues it again once the engine answers. (One that went away since it
            # last answered fails the sandbox's creation, which leaves the row queued the same way.)
            log.warning("evaluation %s deferred: the Docker engine does not answer", self.evaluation.pk)
            return RunDisposition.DEFERRED_ENGINE_DOWN
        self._start_ahead()
        if (waiting := self.await_runtime()) is not None:
            return waiting
        if not self.evaluation.claim(worker_name()):
            return RunDisposition.NOT_CLAIMED
        self.claimed_at = time.monotonic()
        self.attempt = self.evaluation.attempts
        if self.keep is not None and self._reuse() is not None:
            self.keep.batch_id = self.evaluation.batch_id
        return None

    def await_runtime(self) -> RunDisposition | None:
        """A run of a repository runtime whose image is not on this engine waits for its build (off the
        queues; ``builds.park``) rather than fail, or ends ``error`` if the last build failed. Only a
        build never requested is requested here: one that succeeded elsewhere (another host's engine)
        is not rebuilt for this engine, and the run fails as any run on a missing image does."""
        evaluation = self.evaluation
        if evaluation.status != Status.QUEUED or not settings.RUNTIME_BUILD_ON_DEMAND:
            return None
        runtime = self.runtime_row()
        if runtime is None or builds.definition_for(runtime) is None or image.find_image(runtime.image) is not None:
            return None
        known = builds.build_of(runtime)
        if known is not None and known.status == BuildStatus.SUCCEEDED:
            return None
        decision = builds.park(evaluation, runtime)
        log.info("evaluation %s: its runtime %s has no image yet: %s", evaluation.pk, runtime.name, decision)
        if decision == builds.Wait.WAIT:
            return RunDisposition.AWAITING_RUNTIME
        return RunDisposition.FINISHED if decision == builds.Wait.FAILED else None

    def prepare(self) -> RunDisposition | None:
        """Everything the runner needs; ends the run ``error`` when the sandbox cannot be trusted or built."""
        try:
            selfcheck.require_policy()
        except selfcheck.SandboxUnavailable as exc:
            log.error("evaluation %s not run: the sandbox is unavailable: %s", self.evaluation.pk, exc)
            return self._end_before_start(
                "sandbox unavailable: the sandbox self-check failed (logged for the operators)"
            )
        # Read a moment ago (``await_runtime``, ``_start_ahead``): not read twice.
        runtime = self.runtime_row()
        if runtime is None:
            return self._end_before_start(f"runtime {self.evaluation.language!r} no longer exists")
        if self.attempt > 1:
            self._remove_stale_containers()
        # A retried run continues the seq numbers after the earlier attempt's output and notice (read
        # by the claim).
        last_seq = self.evaluation.last_seq
        if last_seq is None:
            last_seq = retries.next_seq(self.evaluation.pk) - 1
        self.recorder = OutputRecorder(self.evaluation.pk, start_seq=last_seq)
        self.monitor = self._safety_monitor()
        self.controller = Controller(
            self.evaluation, self.recorder, self.monitor, self.heartbeat, read_at=self.claimed_at
        )
        self.request = self.request or self._run_request(runtime)
        return None

    def runtime_row(self) -> Runtime | None:
        """The row of the evaluation's runtime (None: there is none): read once per run, or taken from
        the sample before it in this job when that one read it less than ``RUNTIME_ROW_FRESH_S`` ago."""
        if self.runtime is None:
            read = self.runtime_read
            fresh = read is not None and time.monotonic() - read.at < RUNTIME_ROW_FRESH_S
            if fresh and read.row.name == self.evaluation.language:
                self.runtime = read.row
            else:
                self.runtime = Runtime.objects.filter(name=self.evaluation.language).first()
                if self.runtime is not None:
                    self.runtime_read = RuntimeRead(self.runtime, time.monotonic())
        return self.runtime

    def _start_ahead(self) -> None:
        """Get the run's sandbox now, while the row is claimed and the run prepared (``runner.Ahead``: a
        warm one from this worker's pool, else a cold start): for a first attempt (a retry first
        removes what an earlier one left under the run's name), and not for a batch sample that may
        take the sandbox its batch kept (``_reuse``: claimed by the runner)."""
        evaluation = self.evaluation
        if evaluation.status != Status.QUEUED or evaluation.attempts:
            return
        if evaluation.tests and self._reuse() is not None:
            return
        if self.runtime_row() is None:
            return
        self.request = self._run_request(self.runtime)
        try:
            self.ahead = runner.Ahead(self.request, pool_owner=pool_owner())
        except RuntimeUnknown:
            return  # the run itself says so

    def _discard_ahead(self) -> None:
        if self.ahead is not None:
            self.ahead.discard()

    def execute(self) -> RunDisposition:
        """Run it in the sandbox. The runner calls ``conclude`` before it removes the container, so the
        verdict reaches the user without waiting for the engine's removal (about 0.15 s)."""
        # The sandbox's start counts from when it began, ahead of the claim or now.
        self.started = self.ahead.began if self.ahead is not None else time.monotonic()
        if self.evaluation.tests:
            return self.execute_tests()
        result = runner.run(
            self.request,
            on_output=self._on_output,
            control=self.controller,
            on_sample=self._on_sample,
            on_result=self._on_result,
            pool_owner=pool_owner(),
            remove_behind=True,  # in a worker with a remover (apps.sandboxing.removal)
            ahead=self.ahead,
        )
        if self.disposition is None:  # the runner ended before it had a result to hand over
            self._on_result(result)
        return self.disposition

    def execute_tests(self) -> RunDisposition:
        """Run the program once per test, each in a fresh process in one sandbox, and judge each."""
        tests = self.evaluation.tests
        code = self.evaluation.code
        results = runner.run_programs(
            self.request,
            [testing.program_for(code, test) for test in tests],
            on_output=self._on_test_output,
            control=self.controller,
            on_sample=self._on_sample,
            on_program=self._on_test_start,
            pool_owner=pool_owner(),
            reuse=self._reuse(),
            remove_behind=True,
            ahead=self.ahead,
        )
        verdicts = []
        for position, test in enumerate(tests):
            if position < len(results) and results[position].outcome != Outcome.ERROR:
                verdicts.append(testing.judge(position, test, results[position], self._captures[position]))
            else:
                verdicts.append(testing.not_run(position, test))
        self.verdicts = verdicts
        for verdict in verdicts:
            line = f"[crucible] test {verdict.position + 1} {verdict.name}: {verdict.status}"
            line += f" ({verdict.message})\n" if verdict.message else "\n"
            self.recorder.write("stderr", line.encode("utf-8", errors="replace"), ending=True)
        return self.conclude(testing.combined(results, verdicts))

    def _reuse(self) -> runner.Reuse | None:
        """A batch's sandbox kept by this worker for its samples (``reuse: "batch"``), if allowed here."""
        job = get_current_job()
        evaluation = self.evaluation
        if not evaluation.sandbox_reuse or evaluation.batch_id is None or settings.SANDBOX_REUSE_IDLE_S <= 0:
            return None
        if job is None or not job.worker_name:
            return None
        # A worker that runs jobs in its own process resets the sandbox while it takes its next job.
        background = not settings.WORKER_FORK
        return runner.Reuse(owner=job.worker_name, group=str(evaluation.batch_id), background=background)

    def conclude(self, result: runner.RunResult) -> RunDisposition:
        """How the run ended decides what is recorded: nothing (abandoned), a retry, or the end."""
        abandoned = self.controller.abandon_reason()
        if abandoned == Abandon.SUPERSEDED:
            log.warning("evaluation %s: abandoned, the row was handed to another attempt", self.evaluation.pk)
            return RunDisposition.SUPERSEDED
        if result.failure == Failure.ENGINE_AWAY and not self.controller.requested:
            return self._hand_back_unstarted()
        if abandoned == Abandon.SHUTDOWN and result.outcome == Outcome.STOPPED and not self.controller.requested:
            # The worker is stopping: this run was stopped by us, not by the user; hand it back.
            self.recorder.flush_all()
            return self._retry_or_fail(Reason.WORKER_LOST, "worker_shutdown")
        if result.failure is not None and result.failure.transient:
            # The engine failed under the run: a platform fault, run again once.
            log.warning("evaluation %s: platform fault: %s", self.evaluation.pk, result.error)
            self.recorder.flush_all()
            return self._retry_or_fail(Reason.ENGINE_ERROR, f"platform error: {public_error(result)}")
        return self.record(result)

    def record(self, result: runner.RunResult) -> RunDisposition:
        """Store the end (artifacts and the terminal transition in one transaction) and publish it."""
        requested = self.controller.take_safety_stop()
        if self.verdicts is None:
            status, reason = end_of(result.outcome, result.exit_code, requested)
        else:
            status, reason = end_of_tests(result, self.verdicts, requested)
            if self.evaluation.tests_hidden:
                # What the program printed under hidden tests is not in the log; say so once.
                notice = b"[crucible] output under the task's hidden tests is not shown\n"
                self.recorder.write("stderr", notice, ending=True)
        capped = result.outcome == Outcome.OUTPUT_CAPPED
        if result.failure is not None:
            log.warning("evaluation %s ended error: %s", self.evaluation.pk, result.error)
        error = public_error(result)
        if capped and not error:
            error = f"output cap of {self.evaluation.output_cap_bytes} bytes exceeded; the program was stopped"
        fields = dict(
            # An output-capped program was killed by the runner: it has no exit code of its own.
            exit_code=None if capped else result.exit_code,
            signal=None if capped else result.signal,
            error=error[:2000],
            output_truncated=result.output_truncated,
            output_bytes=self.recorder.total_bytes,
            peak_memory_bytes=result.peak_memory_bytes,
            cpu_time_ms=result.cpu_time_ms,
            image_digest=result.image_id or "",
            sandbox_runtime=result.engine_runtime,
        )
        if result.duration_ms is not None:
            fields["duration_ms"] = result.duration_ms
        # The incident holds the evidence before the run is seen to end (its record is complete then).
        self._record_evidence(result)
        try:
            notice = with_db_retry(
                lambda: self._store_end(status, reason, fields, result),
                f"recording the end of {self.evaluation.pk}",
            )
        except IntegrityError:
            # A seq of the last chunks was taken (an earlier write whose answer was lost, or another
            # attempt): the recorder sorts that out chunk by chunk, then the end is stored alone.
            self.recorder.flush_all()
            notice = with_db_retry(
                lambda: self._store_end(status, reason, fields, result),
                f"recording the end of {self.evaluation.pk}",
            )
        self._record_sandbox_start(result.warm)
        if notice is not None:
            publisher.publish_log(self.evaluation.pk, notice.seq, notice.stream, notice.text)
        publisher.publish_end(self.evaluation, stored_seq=notice.seq if notice else self.recorder.stored_seq)
        log.info(
            "evaluation %s ended %s (%s), exit %s, %s ms under %s",
            self.evaluation.pk,
            status,
            reason,
            fields["exit_code"],
            fields.get("duration_ms"),
            result.engine_runtime,
        )
        return RunDisposition.FINISHED

    def _store_end(self, status: Status, reason: Reason, fields: dict, result: runner.RunResult) -> OutputChunk | None:
        """The output's last chunks, the artifacts, a notice of the files not kept and the terminal
        transition, in one transaction (one commit; retried whole after an outage). Returns the
        notice chunk, if one was written."""
        with transaction.atomic():
            self.recorder.insert_unstored()
            refused = self._store_artifacts(result.artifacts)
            notice = artifacts_notice(result.artifacts_skipped_names, refused, result.artifacts_truncated)
            chunk = self._store_notice(notice) if notice else None
            if self.verdicts is not None:
                # Whether every test passed is written by the terminal transition itself.
                fields = {**fields, "passed": all(v.passed for v in self.verdicts)}
            ended = self.evaluation.finish(status, reason=reason, attempt=self.attempt, **fields)
            if ended and self.verdicts is not None:
                self._store_verdicts()
        self.recorder.committed()
        return chunk

    def _record_evidence(self, result: runner.RunResult) -> None:
        """A stop that kept evidence: its account and the artifacts' hashes go to the run's incident."""
        if result.evidence is None:
            return
        try:
            incidents.record_evidence(
                evaluation_id=self.evaluation.pk,
                evidence=result.evidence.as_dict(),
                artifacts=[{"name": a.name, "size": a.size, "sha256": a.sha256} for a in result.artifacts],
            )
        except Exception:
            log.exception("evaluation %s: could not record the evidence of its stop", self.evaluation.pk)

    def _store_verdicts(self) -> None:
        verdicts = self.verdicts or []
        TestResult.objects.bulk_create(
            TestResult(
                evaluation_id=self.evaluation.pk,
                position=v.position,
                name=v.name[:200],
                category=v.category,
                status=v.status,
                passed=v.passed,
                duration_ms=v.duration_ms,
                exit_code=v.exit_code,
                message=v.message[:300],
                detail=v.detail[:10000],
            )
            for v in verdicts
        )

    def _store_artifacts(self, artifacts) -> int:
        """Store each artifact in its own savepoint; returns how many the database refused.

        A refusal is the program's own doing (what it wrote), so it leaves that file out and the run
        ends by its own verdict: it is never a platform fault, and never retried."""
        refused = 0
        for artifact in artifacts:
            try:
                with transaction.atomic():
                    Artifact.objects.create(
                        evaluation=self.evaluation,
                        name=artifact.name,
                        size=artifact.size,
                        sha256=artifact.sha256,
                        data=artifact.data,
                    )
            except (DataError, IntegrityError):
                log.warning(
                    "evaluation %s: artifact %r not stored", self.evaluation.pk, artifact.name[:80], exc_info=True
                )
                refused += 1
        return refused

    def _store_notice(self, notice: bytes) -> OutputChunk | None:
        """The notice as the next stderr chunk; None if that seq is taken (another attempt owns the row)."""
        try:
            with transaction.atomic():
                return OutputChunk.objects.create(
                    evaluation_id=self.evaluation.pk, seq=self.recorder.seq + 1, stream="stderr", data=notice
                )
        except IntegrityError:
            return None

    # --- callbacks of the runner -------------------------------------------------------------

    def _on_output(self, stream: str, data: bytes) -> None:
        self.recorder.write(stream, data)
        self.monitor.on_output(stream, data)

    def _on_test_start(self, position: int) -> None:
        test = self.evaluation.tests[position]
        self._captures.append(testing.Capture())
        header = f"[crucible] test {position + 1}/{len(self.evaluation.tests)}: {test['name']}\n"
        self.recorder.write("stderr", header.encode("utf-8", errors="replace"))

    def _on_test_output(self, stream: str, data: bytes) -> None:
        """A test's output is judged; it reaches the log only when the owner may see the tests."""
        self._captures[-1].add(stream, data)
        self.monitor.on_output(stream, data)
        if not self.evaluation.tests_hidden:
            self.recorder.write(stream, data)

    def _on_sample(self, sample) -> None:
        publisher.publish_sample(self.evaluation.pk, self.monitor.on_sample(sample).as_message())

    def _on_result(self, result: runner.RunResult) -> None:
        self.disposition = self.conclude(result)

    def _on_alert(self, alert) -> None:
        publisher.publish_alert(self.evaluation.pk, alert.as_message())
        if alert.action == "stop":
            services.stop(self.evaluation, control=Control.SAFETY_STOP)

    # --- helpers -----------------------------------------------------------------------------

    def _end_before_start(self, error: str) -> RunDisposition:
        self.evaluation.finish(Status.ERROR, reason=Reason.ENGINE_ERROR, error=error)
        publisher.publish_end(self.evaluation)
        return RunDisposition.FINISHED

    def _hand_back_unstarted(self) -> RunDisposition:
        """The engine could not be reached to create the sandbox (it is restarting): nothing ran, so
        this attempt does not count. The row goes back to ``queued`` (its heartbeat stopped first, so
        nothing of this attempt writes to it after) and the reconciler enqueues it again once the
        engine answers, as for a run the engine was down for at its claim."""
        self.heartbeat.stop()
        self.heartbeat.join(timeout=settings.WORKER_HEARTBEAT_S + 10)
        if not self.evaluation.hand_back(self.attempt):
            return RunDisposition.SUPERSEDED
        log.warning("evaluation %s handed back: the Docker engine could not be reached", self.evaluation.pk)
        publisher.publish_status(self.evaluation)
        return RunDisposition.DEFERRED_ENGINE_DOWN

    def _retry_or_fail(self, reason: Reason, detail: str) -> RunDisposition:
        decision = retries.retry_or_fail(self.evaluation, reason, detail, by="worker", attempt=self.attempt)
        return RunDisposition.SUPERSEDED if decision is None else DISPOSITION_FOR_RETRY[decision]

    def _hand_over_crash(self, exc: Exception) -> None:
        """A bug or a refusal escaped the run (logged with its traceback by ``handle``): the retry policy
        decides, and the user reads only that the platform failed, never the exception's text."""
        try:
            retries.retry_or_fail(self.evaluation, Reason.ENGINE_ERROR, CRASH_DETAIL, by="worker", attempt=self.attempt)
        except Exception:
            # The database is still away: the reconciler decides once the heartbeat has gone stale.
            log.exception("evaluation %s: could not record the platform error", self.evaluation.pk)

    def _remove_stale_containers(self) -> None:
        """A retried run first removes what an earlier attempt may have left (its container has the same name)."""
        try:
            reconciler.remove_containers_of(self.evaluation)
        except Exception:
            log.warning(
                "could not look for containers left by an earlier attempt of %s", self.evaluation.pk, exc_info=True
            )

    def _safety_monitor(self) -> SafetyMonitor:
        evaluation = self.evaluation
        return SafetyMonitor.for_run(
            evaluation.pk,
            memory_mb=evaluation.memory_mb,
            pids_limit=evaluation.pids_limit,
            cpus=evaluation.cpus,
            on_alert=self._on_alert,
            owner_id=evaluation.owner_id,
        )

    def _run_request(self, runtime: Runtime) -> runner.RunRequest:
        evaluation = self.evaluation
        return runner.RunRequest(
            run_id=str(evaluation.pk),
            runtime=runtime.to_sandbox(),
            code=evaluation.code.encode("utf-8", errors="surrogatepass"),
            stdin=evaluation.stdin.encode("utf-8", errors="surrogatepass"),
            files={
                name: text.encode("utf-8", errors="surrogatepass") for name, text in (evaluation.files or {}).items()
            },
            args=tuple(evaluation.args or ()),
            env=dict(evaluation.env or {}),
            limits=Limits.from_settings(
                timeout_s=evaluation.timeout_s, memory_mb=evaluation.memory_mb, cpus=evaluation.cpus
            ),
        )

    def _record_sandbox_start(self, warm: bool) -> None:
        """How long the sandbox took to be ready (create + start, or a warm pool's claim), for the metrics:
        one INSERT ... ON CONFLICT (a retried run's second attempt replaces the first's), once the end
        is committed, on its own (a metric never undoes the run's end, and needs no savepoint in it)."""
        ready_at = self.controller.first_call_at
        if ready_at is None:
            return
        try:
            RunTiming.record(self.evaluation.pk, int((ready_at - self.started) * 1000), warm)
        except Exception:
            log.warning("could not record the sandbox start time of %s", self.evaluation.pk, exc_info=True)
