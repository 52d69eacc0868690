"""The session agent: runs inside a session's sandbox and does what the host asks, one request at a time
or several at once (``python3 -I -S -c SOURCE``, as the sandbox user, started by one exec that stays
open for the life of the session).

Requests come on stdin and replies go to stdout, both as frames: a 4-byte big-endian length, that
many bytes of a JSON header, then the raw bytes of each blob whose length the header lists in
``blobs`` (a command's input, a file's content, a command's stdout and stderr). Every reply carries
the ``id`` of its request. Requests:

* ``exec``: ``argv``, ``cwd``, ``env``, ``timeout``, ``cap``, optional input blob. The command runs
  in a new session with ``CRUCIBLE_EXEC_ID`` in its environment; at its timeout every process of
  that session or with that id is killed (also those the command left behind after it returned).
  Output beyond ``cap`` bytes (both streams together) is read and dropped.
* ``write``: ``path``, one blob; parents are created; ``read``: ``path``, ``max``. Only regular
  files (a FIFO or a device is refused, never waited on).
* ``ping``.
* ``confine`` (first request only, under gVisor): install the sandbox's seccomp profile (one blob of
  classic BPF) on the agent itself before anything runs, so every command inherits it; runsc
  applies the profile to the container's main process only, not to exec'd processes.

Nothing here trusts the host less than the other way round: the host parses these replies as
hostile (a program of the session can write to this process's stdout too).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import json
import os
import secrets
import selectors
import signal
import stat
import struct
import subprocess
import sys
import threading
import time

EXEC_ID_VARIABLE = "CRUCIBLE_EXEC_ID"
HEADER = struct.Struct(">I")
MAX_REQUEST_HEADER = 8 * 1024 * 1024
READ_CHUNK = 256 * 1024
KILL_DEADLINE_S = 10.0
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_CHILD_SUBREAPER = 38, 22, 2, 36
BPF_INSTRUCTION_BYTES = 8
ERRORS = {
    errno.ENOENT: "not_found",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EROFS: "permission_denied",
    errno.ENOEXEC: "permission_denied",
    errno.EISDIR: "is_a_directory",
    errno.ENOTDIR: "not_a_directory",
    errno.EEXIST: "not_a_directory",  # makedirs met a file where a parent directory should be
    errno.ENXIO: "not_a_file",
    errno.EAGAIN: "too_many_processes",
    errno.ENOSPC: "no_space",
    errno.EFBIG: "too_large",
    errno.ENAMETOOLONG: "bad_path",
    errno.ELOOP: "bad_path",
}


def error_code(exc: OSError) -> str:
    return ERRORS.get(exc.errno or 0, "failed")


def exit_status(returncode: int) -> int:
    """A shell's view of how a process ended: 128 + the signal that killed it."""
    return 128 - returncode if returncode < 0 else returncode


# --- framing ---------------------------------------------------------------------------------


def read_exact(stream, size: int) -> bytes:
    """Exactly ``size`` bytes from ``stream``; raises EOFError if it ends first."""
    parts, left = [], size
    while left:
        part = stream.read(min(left, READ_CHUNK))
        if not part:
            raise EOFError
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_frame(stream) -> tuple[dict, list[bytes]]:
    (size,) = HEADER.unpack(read_exact(stream, HEADER.size))
    if size > MAX_REQUEST_HEADER:
        raise ValueError("request header too large")
    header = json.loads(read_exact(stream, size))
    blobs = [read_exact(stream, int(length)) for length in header.get("blobs", [])]
    return header, blobs


def encode_frame(header: dict, blobs: list[bytes] = ()) -> bytes:
    header = dict(header, blobs=[len(blob) for blob in blobs])
    raw = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([HEADER.pack(len(raw)), raw, *blobs])


class Replies:
    """stdout, written one whole frame at a time by whichever thread has a reply."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def send(self, header: dict, blobs: list[bytes] = ()) -> None:
        frame = encode_frame(header, blobs)
        with self.lock:
            self.stream.write(frame)
            self.stream.flush()


# --- killing what an exec started ------------------------------------------------------------


def _stat_ids(pid: str) -> tuple[bytes, int, int, int]:
    """(state, parent, process group, session) of ``pid`` from /proc (the name may hold spaces or parens)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


class Children:
    """This agent is the sandbox's child subreaper (where the kernel allows it; else orphans go to the
    sandbox's init): a process an exec leaves behind becomes this agent's (or init's) child when its
    parent ends, even one that left its session and cleared its environment (``setsid env -i …``),
    which nothing else would tie to an exec. ``own`` are the commands this
    agent started and still waits for; any other child ("a stray"), and all it started, dies with the
    next exec that is killed or reaches its timeout. A thread reaps the strays that exited."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.own: set[int] = set()
        self.subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1) == ""

    def waited(self, pid: int) -> None:
        with self.lock:
            self.own.discard(pid)

    def strays(self) -> set[int]:
        """Processes no exec owns any more, and every process under them: children of this agent it
        did not start itself, and children of the sandbox's init but its idle process (the first it
        started). Orphans go to init where this agent cannot be a subreaper (gVisor of 2022 refuses
        it) and when the agent that started them was killed."""
        me, parents, started = os.getpid(), {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as handle:
                        fields = handle.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] not in (b"Z", b"X"):
                    parents[int(entry)], started[int(entry)] = int(fields[1]), int(fields[19])
        under_init = [pid for pid, parent in parents.items() if parent == 1]
        idle = min(under_init, key=lambda pid: (started[pid], pid), default=None)
        with self.lock:
            found = {
                pid
                for pid, parent in parents.items()
                if (parent == me and pid not in self.own) or (parent == 1 and pid != idle)
            }
        found.discard(me)
        grew = True
        while grew:
            under = {pid for pid, parent in parents.items() if parent in found} - found
            grew = bool(under)
            found |= under
        return found

    def reap_strays(self) -> None:
        """Forever: collect the exit status of strays that ended (never of a command someone waits for)."""
        me = str(os.getpid())
        while True:
            time.sleep(0.5)
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    state, parent, _group, _session = _stat_ids(entry)
                except (OSError, IndexError, ValueError):
                    continue
                if state != b"Z" or str(parent) != me:
                    continue
                with self.lock:  # a command being started is added to ``own`` under the same lock
                    if int(entry) not in self.own:
                        try:
                            os.waitpid(int(entry), os.WNOHANG)
                        except ChildProcessError:
                            pass


CHILDREN: Children | None = None


def _marked(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def processes_of(session_id: int, exec_id: str) -> list[int]:
    """Live processes in ``session_id`` or carrying ``exec_id`` in their environment (not this one, not
    PID 1; not zombies, which are dead already and go when their parent reaps them)."""
    marker = f"{EXEC_ID_VARIABLE}={exec_id}".encode()
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, me):
            continue
        try:
            state, _parent, group, session = _stat_ids(entry)
        except (OSError, IndexError, ValueError):
            continue
        if state in (b"Z", b"X"):
            continue
        if session_id in (group, session) or _marked(entry, marker):
            found.append(int(entry))
    if CHILDREN is not None:
        found.extend(CHILDREN.strays() - set(found) - {1, me})
    return found


def kill_exec(session_id: int, exec_id: str) -> int:
    """SIGKILL every process of one exec. A fork bomb refills as fast as one kills, so its processes are
    frozen first (SIGSTOP: a stopped process cannot fork), again until a listing finds no process
    that was not already frozen, then all killed; repeated until none is left or ``KILL_DEADLINE_S``."""
    killed = 0
    deadline = time.monotonic() + KILL_DEADLINE_S
    try:
        os.killpg(session_id, signal.SIGKILL)
    except OSError:
        pass
    while time.monotonic() < deadline:
        frozen: set[int] = set()
        while time.monotonic() < deadline:
            found = set(processes_of(session_id, exec_id))
            if found <= frozen:
                break
            for pid in found - frozen:
                _signal(pid, signal.SIGSTOP)
            frozen |= found
        if not frozen:
            break
        for pid in frozen:
            killed += _signal(pid, signal.SIGKILL)
        time.sleep(0.005)
    return killed


def _signal(pid: int, number: int) -> int:
    try:
        os.kill(pid, number)
        return 1
    except OSError:
        return 0


class Sweeper:
    """Kills, at each exec's deadline, what that exec left running after it returned."""

    def __init__(self) -> None:
        self.due: list[tuple[float, int, str]] = []
        self.wakeup = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def at(self, deadline: float, session_id: int, exec_id: str) -> None:
        with self.wakeup:
            heapq.heappush(self.due, (deadline, session_id, exec_id))
            self.wakeup.notify()

    def _run(self) -> None:
        while True:
            with self.wakeup:
                while not self.due or self.due[0][0] > time.monotonic():
                    self.wakeup.wait(None if not self.due else max(0.0, self.due[0][0] - time.monotonic()))
                _deadline, session_id, exec_id = heapq.heappop(self.due)
            kill_exec(session_id, exec_id)


# --- requests ---------------------------------------------------------------------------------


class Output:
    """Both streams of a command, kept up to ``cap`` bytes together; the rest is read and dropped."""

    def __init__(self, cap: int) -> None:
        self.left = cap
        self.kept = {1: bytearray(), 2: bytearray()}
        self.total = {1: 0, 2: 0}
        self.truncated = False

    def add(self, stream: int, data: bytes) -> None:
        self.total[stream] += len(data)
        take = data[: max(0, self.left)]
        self.kept[stream] += take
        self.left -= len(take)
        if len(take) < len(data):
            self.truncated = True


def _feed(pipe, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            written = os.write(pipe.fileno(), view[:READ_CHUNK])
            view = view[written:]
    except OSError:
        pass  # the command closed its stdin or ended: what it did not read is dropped
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _drain(process, output: Output, deadline: float) -> bool:
    """Read the command's stdout and stderr until both end or ``deadline``; False when time ran out."""
    selector = selectors.DefaultSelector()
    for number, pipe in ((1, process.stdout), (2, process.stderr)):
        os.set_blocking(pipe.fileno(), False)
        selector.register(pipe, selectors.EVENT_READ, number)
    try:
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in selector.select(min(left, 1.0)):
                try:
                    data = os.read(key.fileobj.fileno(), READ_CHUNK)
                except BlockingIOError:
                    continue
                if data:
                    output.add(key.data, data)
                else:
                    selector.unregister(key.fileobj)
        return True
    finally:
        selector.close()


def _start(request: dict, cwd: str, env: dict, stdin: bytes | None) -> subprocess.Popen:
    """Start the command (argv, never a shell) in a session of its own; counted as this agent's own."""
    process = subprocess.Popen(  # noqa: S603 (this is the sandbox)
        request["argv"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    if CHILDREN is not None:
        CHILDREN.own.add(process.pid)
    return process


def run_command(request: dict, stdin: bytes | None, sweeper: Sweeper) -> tuple[dict, list[bytes]]:
    started = time.monotonic()
    timeout = float(request["timeout"])
    deadline = started + timeout
    cwd = request["cwd"]
    exec_id = secrets.token_hex(8)
    env = {str(k): str(v) for k, v in request["env"].items()}
    env[EXEC_ID_VARIABLE] = exec_id
    if not os.path.isdir(cwd):
        return {"error": "bad_cwd", "message": f"{cwd}: no such directory"}, []
    try:
        # Started and counted as this agent's own in one step, so the stray reaper never takes its status.
        with CHILDREN.lock if CHILDREN is not None else contextlib.nullcontext():
            process = _start(request, cwd, env, stdin)
    except OSError as exc:
        if exc.filename == cwd and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            return {"error": "bad_cwd", "message": f"{cwd}: {exc.strerror}"}, []
        return {"error": error_code(exc), "message": f"{request['argv'][0]}: {exc.strerror}"}, []
    if stdin is not None:
        try:
            threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True).start()
        except RuntimeError:  # no thread can start (the process limit): feed nothing, the command sees EOF
            process.stdin.close()
    output = Output(int(request["cap"]))
    finished = _drain(process, output, deadline)
    timed_out = not finished
    if finished:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        kill_exec(process.pid, exec_id)
        process.wait()
    else:
        sweeper.at(deadline, process.pid, exec_id)
    if CHILDREN is not None:
        CHILDREN.waited(process.pid)
    for pipe in (process.stdout, process.stderr):
        pipe.close()
    header = {
        "returncode": None if timed_out else exit_status(process.returncode),
        "timed_out": timed_out,
        "truncated": output.truncated,
        "stdout_bytes": output.total[1],
        "stderr_bytes": output.total[2],
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
    return header, [bytes(output.kept[1]), bytes(output.kept[2])]


def _open_regular(path: str, flags: int) -> int:
    """A descriptor of ``path`` if it is a regular file (or a new one); never waits on a FIFO or device."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.ENXIO, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def write_file(request: dict, content: bytes) -> tuple[dict, list[bytes]]:
    path = request["path"]
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if os.path.isdir(path):
            return {"error": "is_a_directory", "message": f"{path}: is a directory"}, []
        with os.fdopen(_open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as handle:
            handle.write(content)
    except OSError as exc:
        return {"error": error_code(exc), "message": f"{path}: {exc.strerror}"}, []
    return {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}, []


def read_file(request: dict) -> tuple[dict, list[bytes]]:
    path, most = request["path"], int(request["max"])
    try:
        with os.fdopen(_open_regular(path, os.O_RDONLY), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > most:
                return {"error": "too_large", "message": f"{path}: {size} bytes, over {most}", "size": size}, []
            content = handle.read(most + 1)
    except OSError as exc:
        return {"error": error_code(exc), "message": f"{path}: {exc.strerror}"}, []
    if len(content) > most:
        return {"error": "too_large", "message": f"{path}: over {most} bytes"}, []
    return {"path": path, "size": len(content)}, [content]


def handle(request: dict, blobs: list[bytes], replies: Replies, sweeper: Sweeper) -> None:
    op = request.get("op")
    try:
        if op == "exec":
            header, out = run_command(request, blobs[0] if request.get("has_input") else None, sweeper)
        elif op == "write":
            header, out = write_file(request, blobs[0])
        elif op == "read":
            header, out = read_file(request)
        elif op == "ping":
            header, out = {"pong": True}, []
        else:
            header, out = {"error": "failed", "message": f"unknown request {op!r}"}, []
    except Exception as exc:  # a reply always goes back, so the host never waits for nothing
        header, out = {"error": "failed", "message": f"{type(exc).__name__}: {exc}"}, []
    replies.send({"id": request.get("id"), **header}, out)


def _prctl(option: int, value: int) -> str:
    """prctl(option, value); "" or why not."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        return os.strerror(ctypes.get_errno())
    return ""


def confine(bpf: bytes) -> str:
    """Put this process (and all it will start) under the BPF program ``bpf``; "" or why not."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = SockFprog(len(bpf) // BPF_INSTRUCTION_BYTES, ctypes.addressof(program))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"no_new_privs: {os.strerror(ctypes.get_errno())}"
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return f"seccomp: {os.strerror(ctypes.get_errno())}"
    return ""


def main() -> None:
    source, replies = sys.stdin.buffer, Replies(sys.stdout.buffer)
    replies.send({"id": 0, "ready": True, "pid": os.getpid()})
    first = None
    try:
        request, blobs = read_frame(source)
    except (EOFError, ValueError):
        return
    if request.get("op") == "confine":
        # Before any other thread exists: a filter binds the thread that installs it and its children.
        problem = confine(blobs[0] if blobs else b"")
        replies.send({"id": request.get("id"), **({"error": "failed", "message": problem} if problem else {})})
        if problem:
            return
    else:
        first = (request, blobs)
    global CHILDREN
    CHILDREN = Children()
    try:
        threading.Thread(target=CHILDREN.reap_strays, daemon=True).start()
    except RuntimeError:
        pass  # no thread can start now (the process limit); strays are reaped by no one until then
    sweeper = Sweeper()
    while True:
        if first is None:
            try:
                first = read_frame(source)
            except (EOFError, ValueError):
                return  # the host hung up (or spoke nonsense): the session's link is gone
        try:
            threading.Thread(target=handle, args=(*first, replies, sweeper), daemon=True).start()
        except RuntimeError:  # no thread can start: the sandbox's process limit is used up
            replies.send({"id": first[0].get("id"), "error": "too_many_processes", "message": "no thread can start"})
        first = None


if __name__ == "__main__":
    main()
