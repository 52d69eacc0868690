"""The runner: one program, one locked-down container, a result. Knows nothing about HTTP, users or the DB.

Design (start separate from delivery, so a warm pool of pre-started containers can come later):

1. ``Sandbox.create`` creates and starts a container with the full sandbox policy (see
   ``container_config``) whose main process idles: ``docker-init`` (reaps zombies) running
   ``sleep infinity`` with SIGTERM ignored. If the engine refuses any part of the policy (unknown
   runtime, seccomp, ...) the run ends ``error`` with the reason: never a retry with weaker isolation.
2. ``Sandbox.execute`` delivers the program: an ``exec`` of a constant launcher (``python3 -I -S -c
   LAUNCHER`` with the runtime's argv as arguments; no shell, no user data in argv) reads a
   length-prefixed payload (code, stdin) from its stdin, writes the code file into the ``/sandbox``
   tmpfs, makes fd 0 the stdin bytes (or ``/dev/null``), writes a fixed marker to stdout and
   ``execve``s the runtime command with a fixed environment. The exec's exit code comes from the
   engine (``exec_inspect``), not from anything inside the sandbox.
3. The calling thread reads the engine's multiplexed stream itself (``streams.FrameDemuxer``): no
   reader thread, bounded buffers, chunks of at most 64 KiB, never waiting for a newline. The same
   loop polls ``control()`` every 0.1 s, enforces the wall-clock timeout from the host, samples
   resources about once a second and watches the exec's state (so a program that closes its
   stdout early, or leaves a child holding it open, still ends correctly).
4. When the program ended by itself (or within the grace of a cancel), artifacts are collected
   from ``/output`` while the container still runs, by an exec of a constant collector; its output is
   parsed as hostile (``streams.ArtifactStreamParser``).
5. ``finally``: the container is removed (``force``: SIGKILL to everything in it), always.

Callbacks (``on_output``, ``control``, ``on_sample``) are all called from the calling thread.
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import docker.errors
from django.conf import settings
from docker.types import LogConfig, Ulimit

from apps.sandboxing import engine
from apps.sandboxing.cgroups import CgroupReader, Reading, reading_from_engine_stats
from apps.sandboxing.policy import MIB, Limits, Runtime
from apps.sandboxing.streams import STDERR, STDOUT, ArtifactStreamParser, FrameDemuxer, ProtocolError

log = logging.getLogger(__name__)

SANDBOX_USER = "10001:10001"
CODE_DIR = "/sandbox"
OUTPUT_DIR = "/output"
WORK_DIR = "/tmp"
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "CRUCIBLE_OUTPUT_DIR": OUTPUT_DIR,
}
LABEL_INSTANCE = "org.crucible.instance"
LABEL_RUN = "org.crucible.run"
SECCOMP_PATH = Path(settings.BASE_DIR) / "sandbox" / "seccomp.json"
READ_SIZE = 64 * 1024
CONTROL_EVERY_S = 0.1
INSPECT_EVERY_S = 0.25
SAMPLE_EVERY_S = 1.0
MARKER = b"\x00crucible:go\x00"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# The idle main process: SIGTERM ignored (inherited across exec), so a cancel's "kill -TERM -1"
# reaches the program but not the process that keeps the container alive.
IDLE_COMMAND = ["bash", "-c", "trap '' TERM INT HUP; exec sleep infinity"]
TERM_ALL_COMMAND = ["bash", "-c", "kill -TERM -1 2>/dev/null; exit 0"]

LAUNCHER = r"""
import os, struct, sys
def read(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, min(n - len(buf), 1 << 20))
        if not chunk:
            os.write(2, b"crucible-launcher: payload ended early\n")
            os._exit(125)
        buf += chunk
    return bytes(buf)
def put(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)
code_len, stdin_len = struct.unpack(">II", read(8))
code = read(code_len)
data = read(stdin_len)
path, argv = sys.argv[1], sys.argv[2:]
put(path, code, 0o444)
del code
if data:
    put("/sandbox/.stdin", data, 0o400)
    fd = os.open("/sandbox/.stdin", os.O_RDONLY | os.O_NOFOLLOW)
    os.unlink("/sandbox/.stdin")
else:
    fd = os.open("/dev/null", os.O_RDONLY)
del data
os.dup2(fd, 0)
os.close(fd)
os.chdir("/tmp")
os.write(1, MARKER)
try:
    os.execvpe(argv[0], argv, ENV)
except OSError as e:
    os.write(2, ("crucible-launcher: cannot run %s: %s\n" % (argv[0], e.strerror)).encode())
    os._exit(127)
""".replace("MARKER", repr(MARKER)).replace("ENV", repr(ENVIRONMENT))

# Walks /output without following anything: regular files only (lstat, then O_NOFOLLOW|O_NONBLOCK
# and fstat on the open fd), bounded depth/count/bytes; writes records for ArtifactStreamParser.
COLLECTOR = r"""
import os, stat, struct, sys
max_files, max_bytes = int(sys.argv[1]), int(sys.argv[2])
def w(b):
    view = memoryview(b)
    while view:
        view = view[os.write(1, view):]
count = total = seen = 0
stack = [(b"/output", 0)]
try:
    while stack:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)[:100000]
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > 100000:
                w(b"T"); raise StopIteration
            try:
                st = os.lstat(entry.path)
            except OSError:
                continue
            rel = entry.path[len(b"/output/"):]
            if stat.S_ISDIR(st.st_mode):
                if depth < 15:
                    stack.append((entry.path, depth + 1))
                continue
            if not stat.S_ISREG(st.st_mode) or len(rel) > 1024:
                continue
            if count >= max_files:
                w(b"T"); raise StopIteration
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    continue
                size = st.st_size
                if size > max_bytes - total:
                    w(b"S" + struct.pack(">IQ", len(rel), size) + rel)
                    continue
                w(b"F" + struct.pack(">IQ", len(rel), size) + rel)
                left = size
                while left:
                    chunk = os.read(fd, min(left, 1 << 16))
                    if not chunk:
                        chunk = bytes(min(left, 1 << 16))
                    w(chunk)
                    left -= len(chunk)
                total += size
                count += 1
            finally:
                os.close(fd)
except StopIteration:
    pass
w(b"E")
"""

OUTCOMES = ("exited", "timed_out", "oom_killed", "output_capped", "cancelled", "stopped", "error")


class SandboxSetupError(Exception):
    """The container could not be created or started exactly as the policy requires."""


@dataclass(frozen=True)
class RunRequest:
    run_id: str
    runtime: Runtime
    code: bytes
    stdin: bytes
    limits: Limits


@dataclass
class Artifact:
    name: str
    size: int
    sha256: str
    data: bytes


@dataclass
class ResourceSample:
    at: datetime
    cpu_percent: float
    memory_bytes: int
    pids: int


@dataclass
class RunResult:
    outcome: str
    exit_code: int | None
    signal: int | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    output_bytes: int
    output_truncated: bool
    peak_memory_bytes: int | None
    cpu_time_ms: int | None
    artifacts: list[Artifact]
    artifacts_truncated: bool
    image_id: str
    error: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def error_result(reason: str, image_id: str = "") -> RunResult:
    return RunResult(
        outcome="error",
        exit_code=None,
        signal=None,
        started_at=None,
        finished_at=None,
        duration_ms=None,
        output_bytes=0,
        output_truncated=False,
        peak_memory_bytes=None,
        cpu_time_ms=None,
        artifacts=[],
        artifacts_truncated=False,
        image_id=image_id,
        error=reason,
    )


@lru_cache(maxsize=1)
def seccomp_profile() -> str:
    """The seccomp profile as compact JSON (the engine API takes the profile's content, not a path)."""
    return json.dumps(json.loads(SECCOMP_PATH.read_text()), separators=(",", ":"))


def code_dir_mb() -> int:
    """Size of the /sandbox tmpfs: room for the largest code file and stdin the platform accepts."""
    most = getattr(settings, "SANDBOX_MAX_CODE_BYTES", 256 * 1024) + getattr(settings, "SANDBOX_MAX_STDIN_BYTES", MIB)
    return most // MIB + 2


def container_config(*, name: str, run_id: str, image: str, limits: Limits) -> dict:
    """Keyword arguments for ``containers.create``: the sandbox policy, with no opt-out."""
    tmpfs_common = "rw,noexec,nosuid,nodev,uid=10001,gid=10001"
    size = f"size={limits.tmpfs_mb}m,nr_inodes={limits.tmpfs_inodes}"
    fsize = limits.fsize_mb * MIB
    return {
        "image": image,
        "command": IDLE_COMMAND,
        "name": name,
        "hostname": "sandbox",
        "user": SANDBOX_USER,
        "working_dir": WORK_DIR,
        "environment": dict(ENVIRONMENT),
        "labels": {LABEL_INSTANCE: settings.CRUCIBLE_INSTANCE, LABEL_RUN: run_id},
        "detach": True,
        "stdin_open": False,
        "tty": False,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            WORK_DIR: f"{tmpfs_common},mode=1777,{size}",
            OUTPUT_DIR: f"{tmpfs_common},mode=0755,{size}",
            CODE_DIR: f"{tmpfs_common},mode=0755,size={code_dir_mb()}m,nr_inodes=64",
        },
        "shm_size": f"{min(limits.tmpfs_mb, 64)}m",
        "ipc_mode": "private",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", f"seccomp={seccomp_profile()}"],
        "privileged": False,
        "mem_limit": f"{limits.memory_mb}m",
        "memswap_limit": f"{limits.memory_mb}m",
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "oom_score_adj": 1000,
        "ulimits": [
            Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
            Ulimit(name="fsize", soft=fsize, hard=fsize),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "runtime": settings.SANDBOX_RUNTIME,
        "log_config": LogConfig(type="none"),
        "init": True,
        "auto_remove": False,
        "volumes": {},
        "mounts": [],
    }


def _raw_socket(sock):
    return getattr(sock, "_sock", sock)


def _close_stream(sock) -> None:
    """Really close a hijacked exec stream (``SocketIO.close`` alone leaves the socket open).

    Closing it before a kill matters: the engine will not finish a container whose exec output it
    cannot deliver, so a reader that stopped reading must hang up first.
    """
    raw = _raw_socket(sock)
    actions = [sock.close] if raw is None else [lambda: raw.shutdown(socket.SHUT_RDWR), raw.close, sock.close]
    for action in actions:
        try:
            action()
        except Exception as exc:
            log.debug("closing an exec stream: %s", exc)


def _readable(raw, timeout_s: float) -> bool:
    """Wait until ``raw`` has data or is closed (poll, not select: the worker may hold > 1024 fds)."""
    poller = select.poll()
    poller.register(raw, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


def _exit_signal(exit_code: int | None) -> int | None:
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        return exit_code - 128
    return None


class Sandbox:
    """One started, locked-down container. ``create`` -> ``execute`` -> ``collect_artifacts`` -> ``remove``."""

    def __init__(self, container_id: str, image_id: str, limits: Limits) -> None:
        self.container_id = container_id
        self.image_id = image_id
        self.limits = limits
        self.cgroup = CgroupReader(container_id)
        self.killed = False
        self.last_reading = Reading()
        self.streams: list = []

    @property
    def api(self):
        return engine.client().api

    @classmethod
    def create(cls, *, run_id: str, image: str, limits: Limits, name: str | None = None) -> Sandbox:
        if not _RUN_ID.match(run_id):
            raise SandboxSetupError("run_id must be letters, digits, '_', '.', '-'")
        name = name or f"crucible-{run_id}"
        client = engine.client()
        try:
            config = container_config(name=name, run_id=run_id, image=image, limits=limits)
        except (OSError, ValueError) as exc:
            raise SandboxSetupError(f"cannot load the sandbox policy: {exc}")
        try:
            container = client.containers.create(**config)
        except docker.errors.ImageNotFound as exc:
            raise SandboxSetupError(f"sandbox image not found: {exc.explanation or exc}")
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: the name is taken; that container is not ours to remove
                _remove_quietly(name)
            raise SandboxSetupError(f"the engine refused the sandbox container: {exc.explanation or exc}")
        except Exception as exc:
            _remove_quietly(name)
            raise SandboxSetupError(f"cannot create the sandbox container: {exc}")
        sandbox = cls(container.id, container.attrs.get("Image", ""), limits)
        try:
            container.start()
        except Exception as exc:
            sandbox.remove()
            explanation = getattr(exc, "explanation", None) or exc
            raise SandboxSetupError(f"the engine could not start the sandbox container: {explanation}")
        sandbox.cgroup = CgroupReader(container.id)
        return sandbox

    # --- lifecycle -------------------------------------------------------------------------
    def read_counters(self) -> Reading:
        if self.killed:
            return self.last_reading
        reading = self.cgroup.read() if self.cgroup.available else self._engine_reading()
        peak = max(
            (v for v in (reading.peak_memory_bytes, reading.memory_bytes, self.last_reading.peak_memory_bytes) if v),
            default=None,
        )
        reading.peak_memory_bytes = peak
        if reading.cpu_ns is None:
            reading.cpu_ns = self.last_reading.cpu_ns
        self.last_reading = reading
        return reading

    def _engine_reading(self) -> Reading:
        try:
            return reading_from_engine_stats(self.api.stats(self.container_id, stream=False, one_shot=True))
        except Exception:
            return Reading()

    def kill(self) -> None:
        """SIGKILL every process in the container (counters are read first: the cgroup goes with it)."""
        if self.killed:
            return
        self.read_counters()
        self.killed = True
        for sock in self.streams:
            _close_stream(sock)
        self.streams.clear()
        try:
            self.api.kill(self.container_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running any more
                log.warning("kill %s: %s", self.container_id[:12], exc)

    def terminate_programs(self) -> None:
        """SIGTERM every process of the sandbox user but the idle main process (which ignores it)."""
        try:
            exec_id = self.api.exec_create(self.container_id, TERM_ALL_COMMAND, user=SANDBOX_USER, workdir="/")
            self.api.exec_start(exec_id["Id"], detach=True)
        except Exception as exc:  # e.g. the pids limit is exhausted: the grace then ends with SIGKILL
            log.info("SIGTERM exec in %s failed: %s", self.container_id[:12], exc)

    def remove(self) -> None:
        for attempt in range(3):
            try:
                self.api.remove_container(self.container_id, force=True, v=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc):
                    return
                log.warning("remove %s (attempt %d): %s", self.container_id[:12], attempt + 1, exc)
                time.sleep(0.2)
            except Exception as exc:
                log.warning("remove %s (attempt %d): %s", self.container_id[:12], attempt + 1, exc)
                time.sleep(0.2)
        log.error("could not remove sandbox container %s; the reconciler will", self.container_id[:12])

    def oom_killed_by_engine(self) -> bool:
        try:
            return bool(self.api.inspect_container(self.container_id)["State"].get("OOMKilled"))
        except Exception:
            return False

    # --- delivery and supervision ----------------------------------------------------------
    def execute(
        self,
        request: RunRequest,
        *,
        on_output: Callable[[str, bytes], None],
        control: Callable[[], str | None],
        on_sample: Callable[[ResourceSample], None] | None = None,
    ) -> RunResult:
        return _Execution(self, request, on_output, control, on_sample).run()

    def collect_artifacts(self, deadline_s: float = 15.0) -> tuple[list[Artifact], bool]:
        limits = self.limits
        if limits.artifact_max_files == 0 or limits.artifact_max_bytes == 0:
            return [], False
        parser = ArtifactStreamParser(max_files=limits.artifact_max_files, max_bytes=limits.artifact_max_bytes)
        # Framing overhead per record is small; anything far beyond the caps is hostile.
        stream_cap = limits.artifact_max_bytes + (limits.artifact_max_files + 2) * (13 + 1024) + 64 * 1024
        argv = ["python3", "-I", "-S", "-c", COLLECTOR, str(limits.artifact_max_files), str(limits.artifact_max_bytes)]
        sock = None
        try:
            exec_id = self.api.exec_create(
                self.container_id, argv, stdout=True, stderr=True, user=SANDBOX_USER, workdir="/", environment={}
            )["Id"]
            sock = self.api.exec_start(exec_id, socket=True)
            self.streams.append(sock)
            raw = _raw_socket(sock)
            raw.setblocking(False)
            demux = FrameDemuxer()
            received = 0
            end = time.monotonic() + deadline_s
            while not (parser.done or parser.failed):
                left = end - time.monotonic()
                if left <= 0:
                    break
                if not _readable(raw, min(left, 0.5)):
                    continue
                try:
                    data = raw.recv(READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    break
                received += len(data)
                if received > stream_cap:
                    break
                for stream, piece in demux.feed(data):
                    if stream == STDOUT:
                        parser.feed(piece)
        except ProtocolError:
            pass
        except Exception as exc:
            log.info("artifact collection in %s failed: %s", self.container_id[:12], exc)
        finally:
            if sock is not None:
                _close_stream(sock)
                if sock in self.streams:
                    self.streams.remove(sock)
        parser.finish()
        artifacts = [Artifact(name=a.name, size=a.size, sha256=a.sha256, data=a.data) for a in parser.artifacts]
        return artifacts, parser.truncated


def _remove_quietly(name_or_id: str) -> None:
    try:
        engine.client().api.remove_container(name_or_id, force=True)
    except Exception as exc:
        log.debug("removing %s: %s", name_or_id, exc)


@dataclass
class _Execution:
    sandbox: Sandbox
    request: RunRequest
    on_output: Callable[[str, bytes], None]
    control: Callable[[], str | None]
    on_sample: Callable[[ResourceSample], None] | None
    reason: str | None = None  # why the runner ended the program: timed_out, cancelled, stopped, output_capped
    output_bytes: int = 0
    truncated: bool = False
    marker_left: bytes = MARKER
    launcher_stderr: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    exited: bool = False

    @property
    def api(self):
        return self.sandbox.api

    def payload(self) -> bytes:
        return (
            struct.pack(">II", len(self.request.code), len(self.request.stdin)) + self.request.code + self.request.stdin
        )

    def handle(self, stream: int, data: bytes) -> None:
        if self.marker_left:
            if stream == STDERR:
                self.launcher_stderr += data[: max(0, 2048 - len(self.launcher_stderr))]
                return
            take = data[: len(self.marker_left)]
            if take != self.marker_left[: len(take)]:
                raise ProtocolError("the launcher did not start the program")
            self.marker_left = self.marker_left[len(take) :]
            data = data[len(take) :]
            if not data:
                return
        if self.truncated:
            return
        cap = self.request.limits.output_cap_bytes
        room = cap - self.output_bytes
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        if data:
            self.output_bytes += len(data)
            self.on_output("stdout" if stream == STDOUT else "stderr", data)
        if self.truncated:
            self.end_now("output_capped")

    def end_now(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.sandbox.kill()

    def inspect(self) -> None:
        info = self.api.exec_inspect(self.exec_id)
        if not info.get("Running"):
            self.exited = True
            self.exit_code = info.get("ExitCode")

    def run(self) -> RunResult:
        request, limits, sandbox = self.request, self.request.limits, self.sandbox
        first = self.control()
        if first in ("stop", "safety_stop", "cancel"):
            result = error_result("", sandbox.image_id)
            result.outcome = "cancelled" if first == "cancel" else "stopped"
            return result
        baseline_cpu = sandbox.read_counters().cpu_ns or 0
        code_path = f"{CODE_DIR}/{request.runtime.file_name}"
        argv = ["python3", "-I", "-S", "-c", LAUNCHER, code_path, *request.runtime.argv(code_path)]
        self.exec_id = self.api.exec_create(
            sandbox.container_id,
            argv,
            stdin=True,
            stdout=True,
            stderr=True,
            user=SANDBOX_USER,
            workdir=WORK_DIR,
            environment=dict(ENVIRONMENT),
        )["Id"]
        sock = self.api.exec_start(self.exec_id, socket=True)
        sandbox.streams.append(sock)
        raw = _raw_socket(sock)
        started_at, start = _now(), time.monotonic()
        try:
            raw.settimeout(max(1.0, limits.timeout_s))
            raw.sendall(self.payload())
            try:
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            raw.setblocking(False)
            self.supervise(raw, start)
        finally:
            _close_stream(sock)
            if sock in sandbox.streams:
                sandbox.streams.remove(sock)
        finished_at, end = _now(), time.monotonic()

        if self.marker_left and self.reason is None:
            detail = bytes(self.launcher_stderr).decode("utf-8", "replace").strip()[:500]
            return error_result(
                f"the launcher failed in the sandbox (exit {self.exit_code}): {detail}", sandbox.image_id
            )

        reading = sandbox.read_counters()
        outcome = self.reason or "exited"
        if outcome == "exited" and self.exit_code in (137, None):
            if sandbox.cgroup.available:
                if (reading.oom_kills or 0) > 0:
                    outcome = "oom_killed"
            else:
                sandbox.kill()
                if sandbox.oom_killed_by_engine():
                    outcome = "oom_killed"
        artifacts, artifacts_truncated = [], False
        if not sandbox.killed:
            artifacts, artifacts_truncated = sandbox.collect_artifacts()
        cpu_ns = reading.cpu_ns
        return RunResult(
            outcome=outcome,
            exit_code=self.exit_code,
            signal=_exit_signal(self.exit_code),
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=int((end - start) * 1000),
            output_bytes=self.output_bytes,
            output_truncated=self.truncated,
            peak_memory_bytes=reading.peak_memory_bytes,
            cpu_time_ms=None if cpu_ns is None else max(0, cpu_ns - baseline_cpu) // 1_000_000,
            artifacts=artifacts,
            artifacts_truncated=artifacts_truncated,
            image_id=sandbox.image_id,
        )

    def supervise(self, raw, start: float) -> None:
        limits, sandbox = self.request.limits, self.sandbox
        demux = FrameDemuxer()
        eof_at = exited_at = killed_at = grace_end = None
        last_control = last_inspect = last_sample_at = start
        last_cpu = None
        while True:
            now = time.monotonic()
            got_data = False
            if eof_at is None and sandbox.killed:
                eof_at = now  # the stream was closed by kill()
            if eof_at is None:
                if _readable(raw, 0.02 if self.exited else 0.05):
                    try:
                        data = raw.recv(READ_SIZE)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        eof_at = now
                    elif data:
                        got_data = True
                        for stream, piece in demux.feed(data):
                            self.handle(stream, piece)
            else:
                time.sleep(0.01 if now - eof_at < 0.5 else 0.05)
            now = time.monotonic()
            if sandbox.killed and killed_at is None:
                killed_at = now

            if not self.exited:
                fast = eof_at is not None and now - eof_at < 0.5
                if fast or sandbox.killed or now - last_inspect >= INSPECT_EVERY_S:
                    last_inspect = now
                    self.inspect()
                    if self.exited:
                        exited_at = now
            if self.exited:
                if eof_at is not None or sandbox.killed:
                    return
                # The program is gone but something (a child) holds its output open: drain briefly.
                if (not got_data and now - exited_at >= 0.05) or now - exited_at >= 0.5:
                    return
                continue
            if killed_at is not None and now - killed_at > 5.0:
                log.warning("exec in %s still reported running 5 s after SIGKILL", sandbox.container_id[:12])
                return

            if sandbox.killed:
                continue
            if now - last_control >= CONTROL_EVERY_S:
                last_control = now
                command = self.control()
                if command in ("stop", "safety_stop"):
                    self.reason = "stopped"
                    sandbox.kill()
                    continue
                if command == "cancel" and self.reason is None:
                    self.reason = "cancelled"
                    grace_end = now + limits.kill_grace_s
                    if limits.kill_grace_s > 0:
                        sandbox.terminate_programs()
                    else:
                        sandbox.kill()
                        continue
            if grace_end is not None and now >= grace_end:
                sandbox.kill()
                continue
            if now - start >= limits.timeout_s:
                self.end_now("timed_out")
                continue
            if now - last_sample_at >= SAMPLE_EVERY_S:
                reading = sandbox.read_counters()
                cpu_percent = 0.0
                if reading.cpu_ns is not None and last_cpu is not None:
                    cpu_percent = max(0.0, (reading.cpu_ns - last_cpu) / ((now - last_sample_at) * 1e9) * 100)
                last_cpu, last_sample_at = reading.cpu_ns, now
                if self.on_sample is not None:
                    self.on_sample(
                        ResourceSample(
                            at=_now(),
                            cpu_percent=round(cpu_percent, 1),
                            memory_bytes=reading.memory_bytes or 0,
                            pids=reading.pids or 0,
                        )
                    )


def run(
    request: RunRequest,
    *,
    on_output: Callable[[str, bytes], None],
    control: Callable[[], str | None],
    on_sample: Callable[[ResourceSample], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Run ``request`` in a fresh locked-down container and return how it ended. Never raises for
    program behaviour; platform faults end as outcome ``error`` with ``error`` set. The container
    is removed before this returns. All callbacks run on the calling thread.

    ``on_result`` is called with the result once the program has ended (the container is already
    killed) but before the container is removed, so a caller can record the verdict without waiting
    for the engine's removal; the removal still happens before ``run`` returns, even if it raises.
    """
    sandbox = None
    try:
        result = _execute(request, on_output, control, on_sample)
        sandbox = result[1]
        if on_result is not None:
            on_result(result[0])
        return result[0]
    finally:
        if sandbox is not None:
            sandbox.remove()


def _execute(request, on_output, control, on_sample) -> tuple[RunResult, Sandbox | None]:
    try:
        sandbox = Sandbox.create(run_id=request.run_id, image=request.runtime.image, limits=request.limits)
    except SandboxSetupError as exc:
        return error_result(str(exc)), None
    try:
        return sandbox.execute(request, on_output=on_output, control=control, on_sample=on_sample), sandbox
    except ProtocolError as exc:
        return error_result(f"sandbox protocol error: {exc}", sandbox.image_id), sandbox
    except Exception as exc:
        log.exception("run %s failed", request.run_id)
        return error_result(f"runner failure: {type(exc).__name__}: {exc}", sandbox.image_id), sandbox
    except BaseException:
        sandbox.remove()
        raise
