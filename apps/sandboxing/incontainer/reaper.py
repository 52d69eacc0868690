"""The reaper: started in the sandbox, as the sandbox user, between two programs of one sandbox.

It SIGKILLs every process a program left behind: every process but the container's init (PID 1),
the idle main process and itself. The idle main process is the oldest one after init (the first
child the container started; nothing a program starts can be older): the smallest start time in
``/proc/PID/stat``, then the smallest PID. It repeats until no other process is left (a process
may fork while it is being killed) and exits 0, or 1 when some are still alive after ``ROUNDS``.
Standard library only (``-S``), nothing runs at import time.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ROUNDS = 50
PAUSE_S = 0.01


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of its stat), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return int(fields[19])


def processes() -> dict[int, int]:
    """PID -> start time of every process this process can see."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            started = start_time(int(name))
            if started is not None:
                found[int(name)] = started
    return found


def left_behind(found: dict[int, int], me: int) -> list[int]:
    """The PIDs to kill: all but init, the idle main process (the oldest after init) and ``me``."""
    others = {pid: started for pid, started in found.items() if pid not in (1, me)}
    if not others:
        return []
    idle = min(others, key=lambda pid: (others[pid], pid))
    return sorted(pid for pid in others if pid != idle)


def main() -> int:
    me = os.getpid()
    for _ in range(ROUNDS):
        targets = left_behind(processes(), me)
        if not targets:
            return 0
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(PAUSE_S)
    return 1


if __name__ == "__main__":
    sys.exit(main())
