"""Run one evaluation: claim it, run it in the sandbox, record everything, publish the end."""

from __future__ import annotations

import logging
import os
import socket
import time

from django.db import transaction
from django.utils import timezone

from apps.evaluations import publisher
from apps.evaluations.models import Artifact, Control, Evaluation, Runtime, Status
from apps.evaluations.recording import OutputRecorder
from apps.sandboxing import runner, selfcheck
from apps.sandboxing.policy import Limits

log = logging.getLogger(__name__)

CONTROL_POLL_S = 0.2
HEARTBEAT_S = 5.0

OUTCOME_STATUS = {
    "timed_out": Status.TIMED_OUT,
    "oom_killed": Status.OOM_KILLED,
    "cancelled": Status.CANCELLED,
    "error": Status.ERROR,
}


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
    """Polled by the runner: answers cancel/stop requests from the row, keeps the heartbeat."""

    def __init__(self, evaluation: Evaluation, recorder: OutputRecorder):
        self.evaluation = evaluation
        self.recorder = recorder
        self._next_poll = 0.0
        self._next_heartbeat = time.monotonic() + HEARTBEAT_S
        self.requested = ""

    def __call__(self) -> str | None:
        self.recorder.flush_if_due()
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + CONTROL_POLL_S
            self.requested = (
                Evaluation.objects.filter(pk=self.evaluation.pk).values_list("control", flat=True).first() or ""
            )
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + HEARTBEAT_S
                Evaluation.objects.filter(pk=self.evaluation.pk, status=Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        return self.requested or None


def _status_for(result, requested: str) -> Status:
    if result.outcome == "stopped":
        return Status.SAFETY_STOPPED if requested == Control.SAFETY_STOP else Status.STOPPED
    if result.outcome in OUTCOME_STATUS:
        return OUTCOME_STATUS[result.outcome]
    # "exited" or "output_capped": the program's own exit decides.
    return Status.SUCCEEDED if result.exit_code == 0 and result.outcome == "exited" else Status.FAILED


def run(evaluation_id: str) -> str:
    evaluation = Evaluation.objects.filter(pk=evaluation_id).first()
    if evaluation is None:
        return "missing"
    if not evaluation.claim(worker_name()):
        return f"not claimed ({evaluation.status})"  # a duplicate job, or cancelled while queued
    publisher.publish_status(evaluation)
    try:
        status = _run_claimed(evaluation)
    except Exception as exc:
        log.exception("evaluation %s failed on the platform side", evaluation.pk)
        if evaluation.fail_with_error(f"platform error: {type(exc).__name__}: {exc}", from_statuses=[Status.RUNNING]):
            publisher.publish_end(evaluation)
        return "error"
    return status


def _run_claimed(evaluation: Evaluation) -> str:
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

    recorder = OutputRecorder(evaluation.pk, start_seq=evaluation.chunks.count())
    controller = Controller(evaluation, recorder)
    request = runner.RunRequest(
        run_id=str(evaluation.pk),
        runtime=runtime.to_sandbox(),
        code=evaluation.code.encode("utf-8", errors="surrogatepass"),
        stdin=evaluation.stdin.encode("utf-8", errors="surrogatepass"),
        limits=Limits.from_settings(
            timeout_s=evaluation.timeout_s, memory_mb=evaluation.memory_mb, cpus=evaluation.cpus
        ),
    )
    result = runner.run(request, on_output=recorder.write, control=controller)
    recorder.flush()
    status = _status_for(result, controller.requested)
    error = result.error
    if result.outcome == "output_capped" and not error:
        error = f"output cap of {evaluation.output_cap_bytes} bytes exceeded; the program was stopped"
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
    publisher.publish_end(evaluation)
    return evaluation.status
