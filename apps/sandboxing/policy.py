"""Run policy: the limits of one run and the runtime (image + command) it runs with.

Everything here is plain data; the runner (``runner.py``) turns it into a container that is locked
down with no opt-out. ``Limits.from_settings`` takes the operator's defaults and lets a caller ask
for less (or up to the operator's maximum) of time, memory and CPUs, never more.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from django.conf import settings

MIB = 1024 * 1024
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _setting(name: str, default):
    return getattr(settings, name, default)


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    cpus: float
    pids: int
    output_cap_bytes: int
    tmpfs_mb: int
    tmpfs_inodes: int
    nofile: int
    fsize_mb: int
    artifact_max_files: int
    artifact_max_bytes: int
    kill_grace_s: float

    def __post_init__(self) -> None:
        checks = {
            "timeout_s": self.timeout_s > 0 and math.isfinite(self.timeout_s),
            "memory_mb": self.memory_mb >= 6,
            "cpus": self.cpus > 0 and math.isfinite(self.cpus),
            "pids": self.pids >= 8,
            "output_cap_bytes": self.output_cap_bytes >= 0,
            "tmpfs_mb": self.tmpfs_mb >= 1,
            "tmpfs_inodes": self.tmpfs_inodes >= 16,
            "nofile": self.nofile >= 16,
            "fsize_mb": self.fsize_mb >= 1,
            "artifact_max_files": self.artifact_max_files >= 0,
            "artifact_max_bytes": self.artifact_max_bytes >= 0,
            "kill_grace_s": self.kill_grace_s >= 0 and math.isfinite(self.kill_grace_s),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid sandbox limits: {', '.join(bad)}")

    @classmethod
    def from_settings(cls, *, timeout_s: float | None = None, memory_mb: int | None = None, cpus: float | None = None):
        """Operator defaults; ``timeout_s``/``memory_mb``/``cpus`` may ask for a value up to the operator maximum.

        Raises ``ValueError`` (naming the field) when a requested value is out of range.
        """
        timeout = settings.SANDBOX_DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        memory = settings.SANDBOX_DEFAULT_MEMORY_MB if memory_mb is None else int(memory_mb)
        cpu = settings.SANDBOX_DEFAULT_CPUS if cpus is None else float(cpus)
        if not (0 < timeout <= settings.SANDBOX_MAX_TIMEOUT_S):
            raise ValueError(f"timeout_s must be in (0, {settings.SANDBOX_MAX_TIMEOUT_S}]")
        if not (16 <= memory <= settings.SANDBOX_MAX_MEMORY_MB):
            raise ValueError(f"memory_mb must be in [16, {settings.SANDBOX_MAX_MEMORY_MB}]")
        if not (0.01 <= cpu <= settings.SANDBOX_MAX_CPUS):
            raise ValueError(f"cpus must be in [0.01, {settings.SANDBOX_MAX_CPUS}]")
        tmpfs_mb = settings.SANDBOX_TMPFS_MB
        return cls(
            timeout_s=timeout,
            memory_mb=memory,
            cpus=cpu,
            pids=settings.SANDBOX_PIDS_LIMIT,
            output_cap_bytes=settings.SANDBOX_OUTPUT_CAP_BYTES,
            tmpfs_mb=tmpfs_mb,
            tmpfs_inodes=settings.SANDBOX_TMPFS_INODES,
            nofile=_setting("SANDBOX_NOFILE", 256),
            fsize_mb=_setting("SANDBOX_FSIZE_MB", tmpfs_mb),
            artifact_max_files=settings.SANDBOX_ARTIFACT_MAX_FILES,
            artifact_max_bytes=settings.SANDBOX_ARTIFACT_MAX_BYTES,
            kill_grace_s=settings.SANDBOX_KILL_GRACE_S,
        )


@dataclass(frozen=True)
class Runtime:
    image: str
    command: list[str]  # argv; "{file}" is replaced by the absolute path of the code file
    file_name: str

    def __post_init__(self) -> None:
        if not _FILE_NAME.match(self.file_name):
            raise ValueError("file_name must be a plain file name")
        if not self.command or not all(isinstance(arg, str) and "\0" not in arg for arg in self.command):
            raise ValueError("command must be a non-empty list of strings")

    def argv(self, code_path: str) -> list[str]:
        return [arg.replace("{file}", code_path) for arg in self.command]


def runtime_for(language: str) -> Runtime:
    """The runtime of a submission language (``python`` or ``bash``) on the configured sandbox image."""
    image = settings.SANDBOX_IMAGE
    if language == "python":
        return Runtime(image=image, command=["python3", "-u", "{file}"], file_name="main.py")
    if language == "bash":
        return Runtime(image=image, command=["bash", "{file}"], file_name="main.sh")
    raise ValueError(f"unknown language: {language!r}")
