"""The process view of one sandbox: which processes run in it (pid, parent, name), as the engine's host sees them.

Under runc the container's processes are host processes: their pids are in its pids cgroup
(``cgroup.procs``) and their names in ``/proc/PID/comm``, read without any engine call. Under
gVisor the host sees only gVisor's own sandbox and gofer processes (the engine's ``docker top``
even lists unrelated host processes): the processes inside are listed by ``runsc ps`` run with
the engine's runsc root (``--root``, read from the command line of the sandbox's ``runsc-sandbox``
process). Both need the engine on this host; elsewhere the view is empty (``available`` False).

Names are the program's own choice (``prctl(PR_SET_NAME)``, argv[0]): hostile text, bounded here and
shown as text only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from apps.sandboxing import containers, helper

log = logging.getLogger(__name__)

NAME_CHARS = 32
MAX_PROCESSES = 512  # a fork bomb's view is cut here: the count says the rest
RUNSC_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    name: str

    def as_dict(self) -> dict:
        return {"pid": self.pid, "ppid": self.ppid, "name": self.name}


def _clean(name: str) -> str:
    return "".join(c if c.isprintable() else "\ufffd" for c in name.strip())[:NAME_CHARS]


def runc_view(procs_file: Path) -> list[Process]:
    """The processes of a runc container, from its pids cgroup's ``cgroup.procs`` (host pids)."""
    found = []
    try:
        pids = [int(line) for line in procs_file.read_text().split()[:MAX_PROCESSES]]
    except (OSError, ValueError):
        return []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text()
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        found.append(Process(pid, ppid, _clean(name)))
    return found


def runsc_root(container_id: str) -> str | None:
    """The ``--root`` the engine runs this gVisor container's runsc with (None when not found here)."""
    for pid in containers.runtime_processes(container_id):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"runsc-sandbox"):
            continue
        for arg in argv:
            if arg.startswith(b"--root="):
                return arg[len(b"--root=") :].decode("utf-8", "replace")
    return None


def runsc_view(container_id: str, root: str) -> list[Process]:
    """The processes inside a gVisor container, from ``runsc --root ROOT ps``.

    Its table's columns: UID PID PPID C TTY STIME TIME CMD."""
    runsc = shutil.which("runsc")
    if runsc is None:
        return []
    try:
        done = subprocess.run(
            [runsc, f"--root={root}", "ps", container_id],
            capture_output=True,
            timeout=RUNSC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    found = []
    for line in done.stdout.decode("utf-8", "replace").splitlines()[1 : MAX_PROCESSES + 1]:
        fields = line.split(None, 7)
        if len(fields) < 8 or not fields[1].isdigit() or not fields[2].isdigit():
            continue
        found.append(Process(int(fields[1]), int(fields[2]), _clean(fields[7])))
    return found


def init_and_idle(view: list[Process], init: int) -> set[int]:
    """The pids that keep a sandbox alive: its init and the helper's idle main process, its child."""
    return {init} | {p.pid for p in view if p.ppid == init and p.name == helper.PROCESS_NAME}


def deepest_first(view: list[Process], keep: set[int]) -> list[list[int]]:
    """The pids of ``view`` but ``keep``, in levels by their depth in the process tree, the deepest
    level first (no process is in a level before one of its descendants)."""
    parent = {p.pid: p.ppid for p in view}

    def depth(pid: int) -> int:
        seen, level = set(), 0
        while pid in parent and pid not in seen:
            seen.add(pid)
            pid, level = parent[pid], level + 1
        return level

    levels: dict[int, list[int]] = {}
    for process in view:
        if process.pid not in keep:
            levels.setdefault(depth(process.pid), []).append(process.pid)
    return [levels[level] for level in sorted(levels, reverse=True)]


def runsc_kill(container_id: str, root: str, signal_name: str, *, pid: int | None = None) -> bool:
    """``runsc --root ROOT kill`` one process (``pid``, a pid inside the sandbox) or, without ``pid``,
    every process of the container (``--all``). True when runsc did it.

    runsc refuses a paused sandbox; a stopped (SIGSTOP) one takes signals as usual."""
    runsc = shutil.which("runsc")
    if runsc is None:
        return False
    target = ["--all"] if pid is None else [f"--pid={int(pid)}"]
    try:
        done = subprocess.run(
            [runsc, f"--root={root}", "kill", *target, container_id, signal_name],
            capture_output=True,
            timeout=RUNSC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        log.info("runsc kill %s %s: %s", target[0], signal_name, done.stderr[-200:].decode("utf-8", "replace"))
    return done.returncode == 0


def local_engine() -> bool:
    """The view needs the engine's host: a unix socket engine, and this process able to read /proc."""
    return settings.DOCKER_HOST.startswith("unix://") and os.path.isdir("/proc")
