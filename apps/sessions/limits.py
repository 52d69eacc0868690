"""What a session's sandbox is made of: the evaluation sandbox policy, with a session's limits.

Everything the evaluation policy enforces applies unchanged (no network, read-only root, non-root
user, capabilities dropped, seccomp, memory/CPU/pids limits, gVisor where it is the default); what
differs is sized for an agent: more processes and open files, a larger workspace (``/sandbox``,
where files may be executed), and files up to ``SESSION_FILE_MAX_BYTES``.
"""

from __future__ import annotations

from dataclasses import replace

from django.conf import settings

from apps.sandboxing.policy import MIB, Limits, Profile, runtime_for

LANGUAGES = ("python", "bash")
WORKSPACE_INODES = 65536


def session_limits(memory_mb: int, cpus: float) -> Limits:
    """Raises ``ValueError`` naming the field when ``memory_mb`` or ``cpus`` is out of range."""
    base = Limits.from_settings(memory_mb=memory_mb, cpus=cpus)
    return replace(
        base,
        timeout_s=float(settings.SESSION_MAX_MAX_LIFETIME_S),
        pids=settings.SESSION_PIDS_LIMIT,
        nofile=settings.SESSION_NOFILE,
        tmpfs_mb=settings.SESSION_WORKSPACE_MB,
        tmpfs_inodes=WORKSPACE_INODES,
        fsize_mb=max(settings.SESSION_WORKSPACE_MB, settings.SESSION_FILE_MAX_BYTES // MIB + 1),
        output_cap_bytes=settings.SESSION_OUTPUT_CAP_BYTES,
    )


def images() -> list[str]:
    """The images a session may ask for (each language's runtime image)."""
    return sorted({runtime_for(language).image for language in LANGUAGES})


def session_profile(session) -> Profile:
    return Profile(image=session.image, limits=session_limits(session.memory_mb, session.cpus), session=True)


def exec_limits() -> dict:
    """The limits of one exec and file, as the API reports them with each session."""
    return {
        "exec_timeout_s_default": settings.SESSION_EXEC_TIMEOUT_S,
        "exec_timeout_s_max": settings.SESSION_EXEC_MAX_TIMEOUT_S,
        "output_cap_bytes": settings.SESSION_OUTPUT_CAP_BYTES,
        "file_max_bytes": settings.SESSION_FILE_MAX_BYTES,
    }
