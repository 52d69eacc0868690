"""Session and step rows for tests that do not need a real session host."""

from __future__ import annotations

from django.utils import timezone

from apps.sessions.models import Session, Status, Step, StepKind, StepStatus


def make_session(owner, *, status: str = Status.READY, **fields) -> Session:
    defaults = {
        "image": "crucible-python:latest",
        "memory_mb": 512,
        "cpus": 1.0,
        "idle_timeout_s": 600,
        "max_lifetime_s": 3600,
        "sandbox_runtime": "runc",
    }
    if status == Status.READY:
        defaults["ready_at"] = timezone.now()
    return Session.objects.create(owner=owner, status=status, **{**defaults, **fields})


def add_step(session: Session, seq: int, *, status: str = StepStatus.DONE, **fields) -> Step:
    """Step ``seq`` of ``session`` (an ``echo`` exec by default), running or done."""
    defaults = {"kind": StepKind.EXEC, "cmd": ["echo", f"step {seq}"], "cwd": "/sandbox", "user": "sandbox"}
    if status == StepStatus.DONE:
        defaults.update(returncode=0, stdout=f"step {seq}\n", stdout_bytes=len(f"step {seq}\n"), duration_ms=3)
        defaults["finished_at"] = timezone.now()
    step = Step.objects.create(session=session, seq=seq, status=status, **{**defaults, **fields})
    Session.objects.filter(pk=session.pk, step_count__lt=seq).update(step_count=seq)
    return step


def finish_step(step: Step, **fields) -> Step:
    """The running ``step`` recorded as done (as ``recording.finish`` does)."""
    step.status = StepStatus.DONE
    step.finished_at = timezone.now()
    step.returncode = 0
    step.stdout = f"step {step.seq}\n"
    step.duration_ms = 5
    for name, value in fields.items():
        setattr(step, name, value)
    step.save()
    return step
