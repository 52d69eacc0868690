"""Run one evaluation: claim it, run it in the sandbox, record everything, publish the end."""

from __future__ import annotations

import logging
import os
import socket
import time

from django.db import transaction

from apps.evaluations import killswitch, publisher, resilience, services
from apps.evaluations.models import Artifact, Control, Evaluation, Runtime, Status
from apps.evaluations.resilience import ResilientRecorder
from apps.monitoring.models import RunTiming
from apps.monitoring.safety import SafetyMonitor
from apps.sandboxing import engine, runner, selfcheck
from apps.sandboxing.policy import Limits

log = logging.getLogger(__name__)

CONTROL_POLL_S = 0.2

OUTCOME_STATUS = {
    "timed_out": Status.TIMED_OUT,
    "oom_killed": Status.OOM_KILLED,
    "cancelled": Status.CANCELLED,
    "error": Status.ERROR,
}


def _engine_lost_the_container(evaluation: Evaluation, since: float) -> bool:
    """Did the engine restart under this run? Its event log starts empty after a restart, so the
    container's "create" event is missing then (checked only for runs that died of SIGKILL/SIGTERM)."""
    try:
        events = engine.client().api.events(
            since=int(since) - 1,
            until=int(time.time()) + 1,
            filters={"label": [f"{runner.LABEL_RUN}={evaluation.pk}"], "event": ["create"]},
            decode=True,
        )
        return not any(True for _ in events)
    except Exception:
        return True  # the engine does not even answer


def _remove_stale_containers(evaluation: Evaluation) -> None:
    """A retried run first removes what an earlier attempt may have left (its container has the same name)."""
    from apps.sandboxing import containers

    try:
        for container_id, run_id in containers.list_instance_containers():
            if run_id == str(evaluation.pk):
                containers.remove(container_id)
    except Exception:
        log.warning("could not look for containers left by an earlier attempt of %s", evaluation.pk, exc_info=True)


def worker_name() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
        if job is not None and job.worker_name:
            return job.worker_name
    except Exception:  # noqa: S110 (outside a worker there is no current job)
        pass
    return f"{socket.gethostname()}:{os.getpid()}"


class Controller:
    """Polled by the runner: answers cancel/stop requests from the row.

    It also stops the run (answers "stop") when the run must be abandoned: the worker is shutting
    down, or the row is no longer this attempt's (see ``abandon_reason``). A database outage does not
    stop the run: the last known request stands until the row can be read again.
    """

    heartbeat: resilience.Heartbeat | None = None

    def __init__(self, evaluation: Evaluation, recorder: ResilientRecorder, monitor: SafetyMonitor | None = None):
        self.evaluation = evaluation
        self.recorder = recorder
        self.monitor = monitor
        self.first_call_at: float | None = None  # when the sandbox was ready (the runner's first poll)
        self._next_poll = 0.0
        self.superseded = False
        self.requested = ""

    def __call__(self) -> str | None:
        self.recorder.flush_if_due()
        now = time.monotonic()
        if self.first_call_at is None:
            self.first_call_at = now
        if now >= self._next_poll:
            self._next_poll = now + CONTROL_POLL_S
            self._poll_row()
        if self.monitor is not None and self.monitor.stop_requested and self.requested in ("", Control.CANCEL):
            # A "stop" rule fired. services.stop put it on the row too; answer now, not at the next poll.
            self.requested = Control.SAFETY_STOP
        if self.abandon_reason():
            return Control.STOP
        return self.requested or None

    def _poll_row(self) -> None:
        try:
            row = Evaluation.objects.filter(pk=self.evaluation.pk).values_list("control", "status", "attempts").first()
        except resilience.TRANSIENT_DB_ERRORS:
            resilience.forget_connection()
            return
        if row is None or row[1] != Status.RUNNING or row[2] != self.evaluation.attempts:
            self.superseded = True
            return
        self.requested = row[0] or ""

    def abandon_reason(self) -> str:
        """ "superseded" (the row is not this attempt's any more), "shutdown" (the worker is stopping) or ""."""
        if self.superseded or self.recorder.superseded or (self.heartbeat is not None and self.heartbeat.lost.is_set()):
            return "superseded"
        if resilience.shutdown.is_set():
            return "shutdown"
        return ""


def _status_for(result, requested: str) -> Status:
    if result.outcome == "stopped":
        return Status.SAFETY_STOPPED if requested == Control.SAFETY_STOP else Status.STOPPED
    if result.outcome in OUTCOME_STATUS:
        return OUTCOME_STATUS[result.outcome]
    # "exited" or "output_capped": the program's own exit decides.
    return Status.SUCCEEDED if result.exit_code == 0 and result.outcome == "exited" else Status.FAILED


def _safety_monitor(evaluation: Evaluation) -> SafetyMonitor:
    def on_alert(alert) -> None:
        publisher.publish_alert(evaluation.pk, alert.as_message())
        if alert.action == "stop":
            services.stop(evaluation, control=Control.SAFETY_STOP)

    return SafetyMonitor.for_run(
        evaluation.pk,
        memory_mb=evaluation.memory_mb,
        pids_limit=evaluation.pids_limit,
        cpus=evaluation.cpus,
        on_alert=on_alert,
    )


def _record_sandbox_start(evaluation: Evaluation, run_started: float, ready_at: float | None) -> None:
    """How long the sandbox took to be ready (container create + start), for the metrics."""
    if ready_at is None:
        return
    try:
        RunTiming.objects.update_or_create(
            evaluation_id=evaluation.pk, defaults={"sandbox_start_ms": int((ready_at - run_started) * 1000)}
        )
    except Exception:
        log.warning("could not record the sandbox start time of %s", evaluation.pk, exc_info=True)


def run(evaluation_id: str) -> str:
    evaluation = Evaluation.objects.filter(pk=evaluation_id).first()
    if evaluation is None:
        return "missing"
    if killswitch.is_engaged():
        # Taken off the queue just as the kill switch was engaged: leave the row queued; the
        # reconciler enqueues it again once the switch is released.
        return "deferred: kill switch engaged"
    if not engine.ping():
        # The engine is down (restarting): leave the row queued rather than fail it; the
        # reconciler enqueues it again once the engine answers.
        log.warning("evaluation %s deferred: the Docker engine does not answer", evaluation.pk)
        return "deferred: engine unreachable"
    if not evaluation.claim(worker_name()):
        return f"not claimed ({evaluation.status})"  # a duplicate job, or cancelled while queued
    publisher.publish_status(evaluation)
    heartbeat = resilience.Heartbeat(evaluation.pk, evaluation.attempts)
    heartbeat.start()
    try:
        status = _run_claimed(evaluation, heartbeat)
    except Exception as exc:
        log.exception("evaluation %s failed on the platform side", evaluation.pk)
        try:
            resilience.retry_or_fail(evaluation, f"platform error: {type(exc).__name__}: {exc}", by="worker")
        except Exception:
            # The database is still away: the reconciler decides once the heartbeat has gone stale.
            log.exception("evaluation %s: could not record the platform error", evaluation.pk)
        return "error"
    finally:
        heartbeat.stop()
    return status


def _run_claimed(evaluation: Evaluation, heartbeat: resilience.Heartbeat | None = None) -> str:
    try:
        selfcheck.require_policy()
    except selfcheck.SandboxUnavailable as exc:
        evaluation.finish(Status.ERROR, error=f"sandbox unavailable: {exc}")
        publisher.publish_end(evaluation)
        return Status.ERROR

    runtime = Runtime.objects.filter(name=evaluation.language).first()
    if runtime is None:
        evaluation.finish(Status.ERROR, error=f"runtime {evaluation.language!r} no longer exists")
        publisher.publish_end(evaluation)
        return Status.ERROR

    attempt = evaluation.attempts
    if attempt > 1:
        _remove_stale_containers(evaluation)
    # A retried run continues the seq numbers after the earlier attempt's output and notice.
    recorder = ResilientRecorder(evaluation.pk, start_seq=resilience.next_seq(evaluation.pk) - 1)
    monitor = _safety_monitor(evaluation)
    controller = Controller(evaluation, recorder, monitor)
    controller.heartbeat = heartbeat
    request = runner.RunRequest(
        run_id=str(evaluation.pk),
        runtime=runtime.to_sandbox(),
        code=evaluation.code.encode("utf-8", errors="surrogatepass"),
        stdin=evaluation.stdin.encode("utf-8", errors="surrogatepass"),
        limits=Limits.from_settings(
            timeout_s=evaluation.timeout_s, memory_mb=evaluation.memory_mb, cpus=evaluation.cpus
        ),
    )

    def on_output(stream: str, data: bytes) -> None:
        recorder.write(stream, data)
        monitor.on_output(stream, data)

    def on_sample(sample) -> None:
        publisher.publish_sample(evaluation.pk, monitor.on_sample(sample).as_message())

    run_started = time.monotonic()
    run_wall_started = time.time()

    def conclude(result) -> str:
        """Record how the run ended. Called by the runner before it removes the container, so the
        verdict reaches the user without waiting for the engine's removal (about 0.15 s)."""
        abandoned = controller.abandon_reason()
        if abandoned == "superseded":
            log.warning("evaluation %s: abandoned, the row was handed to another attempt", evaluation.pk)
            return "superseded"
        recorder.flush_all()
        if abandoned == "shutdown" and result.outcome == "stopped" and not controller.requested:
            # The worker is stopping: this run was stopped by us, not by the user; hand it back.
            return resilience.retry_or_fail(evaluation, "worker_shutdown", by="worker", attempt=attempt) or "superseded"
        if result.outcome == "exited" and result.signal in (9, 15) and not controller.requested:
            if _engine_lost_the_container(evaluation, run_wall_started):
                # Killed with its container by an engine stop/restart, not by the program itself.
                result.outcome, result.error = "error", "runner failure: the Docker engine restarted under the run"
        if result.outcome == "error" and resilience.is_transient_engine_error(result.error):
            # The engine failed under the run (restarted, unreachable): a platform fault, retried once.
            # Deterministic refusals (image missing, policy refused) end as error at once, as before.
            reason = f"platform error: {result.error}"
            return resilience.retry_or_fail(evaluation, reason[:1000], by="worker", attempt=attempt) or "superseded"
        _record_sandbox_start(evaluation, run_started, controller.first_call_at)
        status = _status_for(result, controller.requested)
        error = result.error
        if result.outcome == "output_capped" and not error:
            error = f"output cap of {evaluation.output_cap_bytes} bytes exceeded; the program was stopped"

        def record() -> None:
            with transaction.atomic():
                for artifact in result.artifacts:
                    Artifact.objects.create(
                        evaluation=evaluation,
                        name=artifact.name,
                        size=artifact.size,
                        sha256=artifact.sha256,
                        data=artifact.data,
                    )
                evaluation.finish(
                    status,
                    attempt=attempt,
                    exit_code=result.exit_code,
                    signal=result.signal,
                    error=error[:2000],
                    output_truncated=result.output_truncated,
                    output_bytes=recorder.total_bytes,
                    peak_memory_bytes=result.peak_memory_bytes,
                    cpu_time_ms=result.cpu_time_ms,
                    image_digest=result.image_id or "",
                    **({"duration_ms": result.duration_ms} if result.duration_ms is not None else {}),
                )

        resilience.with_db_retry(record, f"recording the end of {evaluation.pk}")
        publisher.publish_end(evaluation)
        return evaluation.status

    concluded: list[str] = []
    result = runner.run(
        request,
        on_output=on_output,
        control=controller,
        on_sample=on_sample,
        on_result=lambda result: concluded.append(conclude(result)),
    )
    return concluded[0] if concluded else conclude(result)
