"""Resource accounting of one container, read from the host's cgroup files (v1 or v2), else the engine.

The kernel's own counters are used where they exist: peak memory (``memory.max_usage_in_bytes``
on v1, ``memory.peak`` on v2), CPU time, pids, and the OOM-kill count (``memory.oom_control`` /
``memory.events``) — reliable even for a process that is OOM-killed between two samples. When the
worker cannot see the host's cgroup tree (e.g. it runs in a container itself), the engine's stats
API is used instead and OOM kills are read from the engine's ``State.OOMKilled`` after the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")


@dataclass
class Reading:
    memory_bytes: int | None = None
    peak_memory_bytes: int | None = None
    cpu_ns: int | None = None
    pids: int | None = None
    oom_kills: int | None = None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                values[key] = int(value)
    except OSError:
        pass
    return values


class CgroupReader:
    """Reads one container's counters; ``available`` is False when no host cgroup directory was found."""

    def __init__(self, container_id: str) -> None:
        self.version = 0
        self.dirs: dict[str, Path] = {}
        if (ROOT / "cgroup.controllers").exists():
            for rel in (f"system.slice/docker-{container_id}.scope", f"docker/{container_id}"):
                if (ROOT / rel / "memory.current").exists():
                    self.version = 2
                    self.dirs = {"unified": ROOT / rel}
                    break
        else:
            for rel in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"):
                if (ROOT / "memory" / rel / "memory.usage_in_bytes").exists():
                    self.version = 1
                    self.dirs = {c: ROOT / c / rel for c in ("memory", "cpuacct", "pids")}
                    break

    @property
    def available(self) -> bool:
        return self.version != 0

    def procs_file(self) -> Path | None:
        """The container's ``cgroup.procs`` (its processes' host pids), None when not visible."""
        if self.version == 1:
            return self.dirs["pids"] / "cgroup.procs"
        if self.version == 2:
            return self.dirs["unified"] / "cgroup.procs"
        return None

    def set_memory_limit(self, limit_bytes: int) -> bool:
        """Set the container's memory limit (swap stays as the engine set it: none). False when the
        cgroup is not visible or the kernel refused; a limit under the usage makes the kernel reclaim,
        then OOM-kill, as it would for a program that grows past it."""
        if self.version == 2:
            files = [self.dirs["unified"] / "memory.max"]
        elif self.version == 1:
            memory = self.dirs["memory"]
            # v1 wants memory+swap >= memory at every step: the order depends on the direction.
            files = [memory / "memory.limit_in_bytes", memory / "memory.memsw.limit_in_bytes"]
            current = _read_int(files[0])
            if current is not None and limit_bytes > current:
                files.reverse()
            files = [path for path in files if path.exists()]
        else:
            return False
        try:
            for path in files:
                path.write_text(str(int(limit_bytes)))
        except OSError as exc:
            log.warning("cannot set the memory limit in %s: %s", files[0].parent, exc)
            return False
        return True

    def read(self) -> Reading:
        if self.version == 1:
            memory, cpuacct, pids = self.dirs["memory"], self.dirs["cpuacct"], self.dirs["pids"]
            usage = _read_int(memory / "memory.usage_in_bytes")
            stat = _read_keyed(memory / "memory.stat")
            if usage is not None:
                usage = max(0, usage - stat.get("total_inactive_file", 0))
            return Reading(
                memory_bytes=usage,
                peak_memory_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
                cpu_ns=_read_int(cpuacct / "cpuacct.usage"),
                pids=_read_int(pids / "pids.current"),
                oom_kills=_read_keyed(memory / "memory.oom_control").get("oom_kill"),
            )
        if self.version == 2:
            unified = self.dirs["unified"]
            usage = _read_int(unified / "memory.current")
            stat = _read_keyed(unified / "memory.stat")
            if usage is not None:
                usage = max(0, usage - stat.get("inactive_file", 0))
            usec = _read_keyed(unified / "cpu.stat").get("usage_usec")
            return Reading(
                memory_bytes=usage,
                peak_memory_bytes=_read_int(unified / "memory.peak"),
                cpu_ns=None if usec is None else usec * 1000,
                pids=_read_int(unified / "pids.current"),
                oom_kills=_read_keyed(unified / "memory.events").get("oom_kill"),
            )
        return Reading()


def reading_from_engine_stats(stats: dict) -> Reading:
    """The same counters from one ``/containers/{id}/stats?one-shot=true`` answer (no OOM count)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    inner = memory.get("stats") or {}
    if usage is not None:
        usage = max(0, usage - inner.get("total_inactive_file", inner.get("inactive_file", 0)))
    return Reading(
        memory_bytes=usage,
        peak_memory_bytes=memory.get("max_usage"),
        cpu_ns=((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage"),
        pids=(stats.get("pids_stats") or {}).get("current"),
    )
