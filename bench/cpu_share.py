"""Where the machine's CPU goes while a benchmark measures something: by group of processes.

``CpuShare`` samples ``/proc`` in a thread (every 200 ms; it reports its own CPU too) between
``start()`` and ``stop()`` and sums each process's user + system time into a group named after what
it is (the workers, gVisor's sandbox processes, PostgreSQL, ...). A process that starts and ends
between two samples is missed: ``unattributed`` is the host's busy time (``/proc/stat``) that no
sampled process accounts for. Linux only; it reads, never signals, other processes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

HZ = os.sysconf("SC_CLK_TCK")

# A process's group, by its program's name (argv[0]; what a process that rewrote its command line
# put first, before any ":"); the first that matches wins. Then by a word of its command line (a
# Django command run by python); else "other".
PROGRAMS = (
    ("runsc-sandbox", "gVisor sandbox"),
    ("runsc-gofer", "gVisor gofer"),
    ("runsc", "gVisor runsc commands"),  # runsc-exec, and the shim's runsc create/start/kill/delete
    ("postgres", "postgres"),
    ("redis-server", "redis"),
    ("dockerd", "dockerd"),
    ("containerd", "containerd"),  # and containerd-shim-runc-v2
)
COMMANDS = (("crucible_worker", "workers"), ("daphne", "web"))
STUB = "gVisor ptrace stubs"  # gVisor's ptrace platform: one per address space, no command line, "exe"


def group_of(cmdline: bytes, comm: str) -> str:
    argv = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    if not argv:
        return STUB if comm == "exe" else "other"
    program = os.path.basename(argv[0].split(" ")[0]).rstrip(":")
    for name, group in PROGRAMS:
        if program.startswith(name):
            return group
    words = {os.path.basename(arg) for arg in argv[1:4]}
    for word, group in COMMANDS:
        if word in words:
            return group
    return "other"


def _host_busy_ticks() -> int:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


@dataclass
class CpuShare:
    interval_s: float = 0.2
    own_s: float = 0.0  # the sampler's own CPU (in the "other" group when it runs in a benchmark)
    by_group: Counter = field(default_factory=Counter)  # group -> ticks
    busy_ticks: int = 0
    wall_s: float = 0.0
    _first: dict = field(default_factory=dict)  # pid -> (group, ticks at first sight)
    _last: dict = field(default_factory=dict)  # pid -> ticks at last sight
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._busy0, self._t0 = _host_busy_ticks(), time.monotonic()
        self._sample(baseline=True)
        self._thread = threading.Thread(target=self._run, name="cpu-share", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(baseline=False)
        self.wall_s = time.monotonic() - self._t0
        self.busy_ticks = _host_busy_ticks() - self._busy0
        for pid, (group, first) in self._first.items():
            self.by_group[group] += self._last[pid] - first

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            began = time.thread_time()
            self._sample(baseline=False)
            self.own_s += time.thread_time() - began

    def _sample(self, *, baseline: bool) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])
                if pid not in self._first:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        cmdline = cmd.read()
                    with open(f"/proc/{pid}/comm") as comm:
                        name = comm.read().strip()
                    # A process seen first after the start ran all its time in the window.
                    self._first[pid] = (group_of(cmdline, name), ticks if baseline else 0)
            except (OSError, IndexError, ValueError):
                continue
            self._last[pid] = ticks

    def seconds(self, prefix: str = "") -> float:
        """CPU seconds of the groups whose names start with ``prefix`` (all of them: ``""``)."""
        return sum(ticks for group, ticks in self.by_group.items() if group.startswith(prefix)) / HZ

    @property
    def busy_s(self) -> float:
        return self.busy_ticks / HZ

    def report(self, per: int | None = None, unit: str = "sample") -> str:
        """One line: host busy time, then each group's share (per ``unit`` when ``per`` is given)."""
        scale = (1000.0 / per, "ms") if per else (1.0, "s")

        def figure(ticks: int) -> str:
            return f"{ticks / HZ * scale[0]:.1f} {scale[1]}"

        attributed = sum(self.by_group.values())
        cores = os.cpu_count() or 1
        parts = [f"{group} {figure(ticks)}" for group, ticks in self.by_group.most_common() if ticks > 0]
        parts.append(f"unattributed {figure(max(self.busy_ticks - attributed, 0))}")
        parts.append(f"this sampler (in other) {self.own_s * scale[0]:.1f} {scale[1]}")
        busy_share = self.busy_ticks / HZ / (self.wall_s * cores) * 100 if self.wall_s else 0.0
        where = f" per {unit}" if per else ""
        return f"CPU{where}: host busy {figure(self.busy_ticks)} ({busy_share:.0f}% of {cores} cores); " + ", ".join(
            parts
        )
