"""The transcript's writes: a step is recorded when it starts (``status: running``) and again when it is
done, by the host that performs it, so a step that ran is on record whoever asked for it.

Output is kept up to ``SESSION_TRANSCRIPT_OUTPUT_BYTES`` per stream (decoded as UTF-8 with
replacement; the byte counts say how much there was); a command line is kept up to ``CMD_KEPT_CHARS``.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from apps.sessions.models import Session, Step, StepKind, StepStatus

CMD_KEPT_CHARS = 64 * 1024
ARG_KEPT_CHARS = 8 * 1024


def kept_cmd(argv: list[str]) -> list[str]:
    """``argv`` as the transcript keeps it: each argument and the whole bounded (a marker says so)."""
    kept, left = [], CMD_KEPT_CHARS
    argv = [arg.replace("\0", "\ufffd") for arg in argv]
    for arg in argv:
        if left <= 0:
            kept.append(f"… {len(argv) - len(kept)} more arguments")
            break
        piece = arg if len(arg) <= min(ARG_KEPT_CHARS, left) else arg[: min(ARG_KEPT_CHARS, left)] + "…"
        kept.append(piece)
        left -= len(piece)
    return kept


def kept_text(data: bytes) -> str:
    """Output as the transcript keeps it: bounded, UTF-8 with replacement, NUL shown as U+FFFD (a text
    column cannot hold NUL; the exec's answer itself carries the exact bytes)."""
    return data[: settings.SESSION_TRANSCRIPT_OUTPUT_BYTES].decode("utf-8", errors="replace").replace("\0", "\ufffd")


def begin(session: Session, kind: StepKind, **fields) -> Step | None:
    """Record a step as started; None when the session is no longer ready (nothing is recorded then)."""
    seq = session.next_seq()
    if seq is None:
        return None
    return Step.objects.create(session=session, seq=seq, kind=kind, started_at=timezone.now(), **fields)


def finish(step: Step, *, stdout: bytes = b"", stderr: bytes = b"", **fields) -> Step:
    """Record a step as done, with what it produced; the session counts as active until now."""
    now = timezone.now()
    step.status = StepStatus.DONE
    step.finished_at = now
    step.stdout = kept_text(stdout)
    step.stderr = kept_text(stderr)
    for name, value in fields.items():
        setattr(step, name, value)
    if step.duration_ms is None:
        step.duration_ms = int((now - step.started_at).total_seconds() * 1000)
    step.save()
    Session.objects.filter(pk=step.session_id).update(last_activity_at=now)
    return step
