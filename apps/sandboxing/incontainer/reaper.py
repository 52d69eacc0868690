"""The reaper: started in the sandbox, as the sandbox user, between two programs of one sandbox.

Without arguments it SIGKILLs every process a program left behind: every process but the
container's init (PID 1), the idle main process and itself. The idle main process is the oldest
one after init (the first child the container started; nothing a program starts can be older): the
smallest start time in ``/proc/PID/stat``, then the smallest PID. It repeats until no other process
is left (a process may fork while it is being killed) and exits 0, or 1 when some are still alive
after ``ROUNDS``.

With ``reset DIR...`` (a sandbox reused for the next sample of a batch) it also empties each DIR
(every writable place), then verifies the sandbox is clean: no other process, every DIR empty, no
System V shared memory, semaphore set or message queue left (they outlive the processes that made
them). It exits 0 only when all of that holds, else 2 with the reason on stderr: the host then
discards the sandbox. Standard library only (``-S``), nothing runs at import time.
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


def kill_left_behind() -> bool:
    """SIGKILL what ``left_behind`` names until nothing is; False if something survives ``ROUNDS``."""
    me = os.getpid()
    for _ in range(ROUNDS):
        targets = left_behind(processes(), me)
        if not targets:
            return True
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(PAUSE_S)
    return False


def empty(directory: str) -> None:
    """Remove everything in ``directory`` (never following a link out of it)."""
    import shutil

    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue


def sysv_objects() -> dict[str, int] | None:
    """How many System V shared memory segments, semaphore sets and message queues exist (the
    sandbox's own IPC namespace), or None when the kernel does not say."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    found = {}
    for name, call, args, index in (
        ("shared memory segments", libc.shmctl, (0, 14), 0),  # SHM_INFO: shm_info.used_ids
        ("semaphore sets", libc.semctl, (0, 0, 19), 7),  # SEM_INFO: seminfo.semusz
        ("message queues", libc.msgctl, (0, 12), 0),  # MSG_INFO: msginfo.msgpool
    ):
        info = ctypes.create_string_buffer(256)
        if call(*args, info) < 0:
            return None
        found[name] = int.from_bytes(info.raw[index * 4 : index * 4 + 4], "little", signed=True)
    return found


def unclean(directories: list[str]) -> list[str]:
    """What keeps the sandbox from being clean (empty when it is)."""
    problems = []
    others = left_behind(processes(), os.getpid())
    if others:
        problems.append(f"{len(others)} processes still alive")
    for directory in directories:
        if os.listdir(directory):
            problems.append(f"{directory} is not empty")
    objects = sysv_objects()
    if objects is None:
        problems.append("System V IPC cannot be inspected")
    else:
        problems += [f"{count} System V {name} left" for name, count in objects.items() if count]
    return problems


def main(args: list[str]) -> int:
    if not args:
        return 0 if kill_left_behind() else 1
    if args[0] != "reset":
        os.write(2, b"reaper: unknown mode\n")
        return 2
    directories = args[1:]
    kill_left_behind()
    try:
        for directory in directories:
            empty(directory)
    except OSError as exc:
        os.write(2, f"reaper: cannot empty: {exc}\n".encode())
        return 2
    problems = unclean(directories)
    if problems:
        os.write(2, ("reaper: not clean: " + "; ".join(problems) + "\n").encode())
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
