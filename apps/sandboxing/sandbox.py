"""One sandbox: a started, locked-down container, and the primitives that use it.

``Sandbox.create(profile, run_id=...)`` creates and starts a container with the whole policy of the
``Profile`` (``policy.container_config``) whose main process idles: ``docker-init`` (reaps zombies)
running the helper's ``idle`` (``helper.py``) with SIGTERM ignored. No program is in it yet, so a sandbox can be
started before it is needed. If the engine refuses any part of the policy (unknown runtime,
seccomp, ...) ``SandboxSetupError`` says so: never a retry with weaker isolation.

Programs are delivered by exec: ``open_exec`` is the primitive. ``execution.execute`` runs and
supervises one program through it, and may be called again while the sandbox lives and has not
been killed, for a program with another code file name (the launcher never overwrites a file); a
limit or a stop ends the whole sandbox. ``kill`` and ``terminate_programs`` end what runs in it,
``collect_artifacts`` reads /output (the collector's output is parsed as hostile) and ``remove``
takes the container away (``containers.remove``, the one way any container is removed).

A sandbox reused for the next sample of a batch and handed over in this process keeps one exec of
the helper's ``serve`` (``Serving``, started by its first ``reset``): ``launch`` then returns that
exec's stream, the program is a frame on it, and ``reset`` is a frame too. ``serve`` is the sandbox
user's, as the samples are: it is non-dumpable, receives each nonce on its stdin only, kills what a
program left before writing its trailer, and anything wrong on its stream (no trailer, its end, a
failed write, a reset reply that is not exactly the expected one on both streams) sets
``serve_lost``: the sandbox is then never reset for another sample, only removed.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import select
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import docker.errors
import docker.utils
import requests
from django.conf import settings
from docker.models.containers import _create_container_args

from apps.sandboxing import containers, engine, helper, processes
from apps.sandboxing.cgroups import CgroupReader, Reading, reading_from_engine_stats
from apps.sandboxing.engine_runtime import is_gvisor
from apps.sandboxing.outcomes import Failure
from apps.sandboxing.policy import (
    BUILD_DIR,
    CODE_DIR,
    LABEL_INSTANCE,
    MIB,
    OUTPUT_DIR,
    SANDBOX_USER,
    SHM_DIR,
    WORK_DIR,
    Limits,
    Profile,
    container_config,
    host_memory_mb,
)
from apps.sandboxing.streams import STDERR, STDOUT, ArtifactStreamParser, FrameDemuxer, ParsedArtifact, ProtocolError

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# SIGTERM to every process of the sandbox user; the idle main process ignores it.
TERM_ALL_COMMAND = helper.TERM_ALL_COMMAND
# Every place a program can write: emptied between two samples of a batch sharing a sandbox.
RESET_DIRS = (CODE_DIR, WORK_DIR, OUTPUT_DIR, SHM_DIR)
REMOVE_ATTEMPTS = 3
REMOVE_PAUSE_S = 0.2
CLEAR_POLL_S = 0.1  # between two looks at a run's name while an earlier attempt's container is removed
MAIN_EXIT_WAIT_S = 2  # for an attached sandbox's main process to exit before the removal
COLLECT_DEADLINE_S = 15.0
COLLECT_READ_WAIT_S = 0.5
COLLECT_RECORD_OVERHEAD = 13 + 1024  # type, header and the longest name of one record
COLLECT_SLACK_BYTES = 64 * 1024
# Under gVisor the processes of a stopped sandbox are SIGKILLed one ``runsc kill`` each, this many at once.
STOPPED_KILL_WORKERS = 8
STOPPED_KILL_WAIT_S = 2.0  # for the engine to see a sandbox killed through runsc stopped
HANDED_TO_INIT_POLL_S = 0.01  # between two looks at a stopped gVisor sandbox's process tree
# Under runc, host signals to a sandbox's processes go round at most this often (a fork bomb refills).
HOST_SIGNAL_ROUNDS = 20
# How far the engine's clock may be off ours when its event log is searched.
EVENT_CLOCK_SLACK_S = 1
OOM_EVENT_POLL_S = 0.1


def _signal_all(pids: list[int], signum: int) -> int:
    """Send ``signum`` to each host pid; how many took it (the others were gone meanwhile)."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, signum)
            sent += 1
        except (ProcessLookupError, PermissionError):
            continue
    return sent


def _reset_reply(stream: ExecStream, nonce: bytes, deadline: float) -> str:
    """Read serve's reply to the reset frame of ``nonce``: "" when it is "ok" on both streams, else why
    not (a reason it gave, or anything else on a stream: a program's leftover, a forgery, an end)."""
    start, got = helper.reset_reply(nonce), {STDOUT: b"", STDERR: b""}
    while any(not data.endswith(b"\x00") or len(data) <= len(start) for data in got.values()):
        pieces = stream.read(min(0.1, max(0.0, deadline - time.monotonic())))
        if pieces is None:
            return "the serve exec ended"
        for kind, piece in pieces:
            if kind not in got or got[kind].endswith(b"\x00") and len(got[kind]) > len(start):
                return "output after the reset's reply"
            got[kind] += piece
            if b"\x00" in got[kind][len(start) : -1]:
                return "output after the reset's reply"
            if (
                not (start.startswith(got[kind]) or got[kind].startswith(start))
                or len(got[kind]) > helper.MAX_RESET_REPLY
            ):
                return "output that is not the reset's reply"
        if time.monotonic() >= deadline:
            return "no reply to the reset in time"
    replies = {data[len(start) : -1] for data in got.values()}
    if replies == {helper.RESET_OK}:
        return ""
    return max(replies).decode("utf-8", "replace")[:500] if len(replies) == 1 else "the streams' replies differ"


def attach_suits(profile: Profile) -> bool:
    """Whether a fresh sandbox of ``profile`` takes its one program over attach (``Sandbox.attach``):
    not a compiled runtime's (two programs: compile, run), not a session's; under gVisor and runc
    alike (a stop keeping evidence kills a stopped gVisor sandbox's processes so that none is reaped
    meanwhile, wherever the program runs: ``_kill_stopped_top_down``)."""
    return not (profile.build_dir or profile.session)


class SandboxSetupError(Exception):
    """The container could not be created or started exactly as the policy requires.

    ``failure`` is ``Failure.SETUP_REFUSED`` when trying again would be refused again, and
    ``Failure.ENGINE_FAULT`` when the engine itself failed (a retry may get through).
    """

    def __init__(self, message: str, failure: Failure = Failure.SETUP_REFUSED) -> None:
        super().__init__(message)
        self.failure = failure


def _discard(name_or_id: str) -> None:
    """Remove what a failed create may have left; a failure here changes nothing for the caller."""
    try:
        containers.remove(name_or_id)
    except Exception as exc:
        log.debug("removing %s: %s", name_or_id, exc)


def _explain(exc: Exception) -> object:
    return getattr(exc, "explanation", None) or exc


def _readable(raw, timeout_s: float) -> bool:
    """Wait until ``raw`` has data or is closed (poll, not select: the worker may hold > 1024 fds)."""
    poller = select.poll()
    poller.register(raw, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


class ExecStream:
    """One exec's hijacked connection: the payload goes in, the engine's frames come out, never blocking."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.raw = getattr(sock, "_sock", sock)
        self.demux = FrameDemuxer()
        self.received = 0
        self.closed = False
        self.raw.setblocking(False)

    def send(self, payload: bytes, timeout_s: float, *, then_close: bool = True) -> None:
        """Write ``payload`` to the exec's stdin, then (``then_close``) close that direction (the program
        sees EOF); raises ``OSError`` when it cannot be written in ``timeout_s``."""
        self.raw.settimeout(timeout_s)
        try:
            self.raw.sendall(payload)
            try:
                if then_close:
                    self.raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        finally:
            self.raw.setblocking(False)

    def read(self, wait_s: float) -> list[tuple[int, bytes]] | None:
        """The (stream, bytes) pieces that arrived within ``wait_s`` (maybe none); None once it has ended.

        Raises ``ProtocolError`` when the bytes are not the engine's framing.
        """
        if self.closed or not _readable(self.raw, wait_s):
            return None if self.closed else []
        try:
            data = self.raw.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        self.received += len(data)
        return self.demux.feed(data)

    def close(self) -> None:
        """Really close the connection (``SocketIO.close`` alone leaves the socket open).

        Closing it before a kill matters: the engine will not finish a container whose exec output
        it cannot deliver, so a reader that stopped reading must hang up first.
        """
        if self.closed:
            return
        self.closed = True
        actions = [lambda: self.raw.shutdown(socket.SHUT_RDWR), self.raw.close, self.sock.close]
        for action in actions:
            try:
                action()
            except Exception as exc:
                log.debug("closing an exec stream: %s", exc)


def _engine_create(config: dict):
    """``containers.create``, plus the host-config fields the SDK has no argument for (``MaskedPaths``)."""
    config = dict(config)
    masked_paths = config.pop("masked_paths", None)
    stdin_once = config.pop("stdin_once", False)
    client = engine.client()
    create_kwargs = _create_container_args({**config, "version": client.api._version})
    if masked_paths is not None:
        create_kwargs["host_config"]["MaskedPaths"] = masked_paths
    if not stdin_once:
        return client.containers.get(client.api.create_container(**create_kwargs)["Id"])
    # The SDK sets ``StdinOnce`` only for a container it attaches to at once (``detach=False``).
    name, platform = create_kwargs.pop("name", None), create_kwargs.pop("platform", None)
    create_kwargs["environment"] = docker.utils.format_environment(create_kwargs.get("environment") or {})
    container_config = client.api.create_container_config(**create_kwargs)
    container_config["StdinOnce"] = True
    return client.containers.get(client.api.create_container_from_config(container_config, name, platform)["Id"])


def _clear_earlier_attempt(name: str) -> bool:
    """Free ``name`` when the container holding it is this instance's: an earlier attempt of the same
    run (a sandbox is named for its run) whose removal failed, e.g. while the engine restarted. The
    run has been claimed again since, so that attempt is over. Returns once the name is free (also when
    another remover, the reconciler's orphan sweep, took that container meanwhile: its removal is
    waited for), or False when the name is not ours to free: a container of another instance, or one
    we cannot inspect. Raises ``SandboxSetupError`` (``ENGINE_FAULT``) when it does not go."""
    deadline = time.monotonic() + settings.SANDBOX_ENGINE_TIMEOUT_S
    while True:
        try:
            labels = engine.client().api.inspect_container(name)["Config"].get("Labels") or {}
        except docker.errors.NotFound:
            return True
        except Exception:
            return False
        if labels.get(LABEL_INSTANCE) != settings.CRUCIBLE_INSTANCE:
            return False
        if time.monotonic() > deadline:
            raise SandboxSetupError(
                f"an earlier attempt's container {name} is not removed in time", Failure.ENGINE_FAULT
            )
        try:
            containers.remove(name)  # returns at once when another removal is in progress
        except Exception as exc:
            raise SandboxSetupError(
                f"an earlier attempt's container {name} cannot be removed: {exc}", Failure.ENGINE_FAULT
            )
        time.sleep(CLEAR_POLL_S)


def _create_container(config: dict, *, replace_stale: bool = True):
    """``containers.create`` with the engine's answer turned into a ``SandboxSetupError`` of the right kind."""
    name = config["name"]
    try:
        return _engine_create(config)
    except docker.errors.ImageNotFound as exc:
        raise SandboxSetupError(f"sandbox image not found: {_explain(exc)}")
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and replace_stale and _clear_earlier_attempt(name):
            log.warning("%s was held by an earlier attempt of the same run: removed", name)
            return _create_container(config, replace_stale=False)
        if exc.status_code != 409:  # 409: the name is taken; that container is not ours to remove
            _discard(name)
        raise SandboxSetupError(f"the engine refused the sandbox container: {_explain(exc)}")
    except Exception as exc:
        _discard(name)  # in case the engine went away after it created it
        if _unreachable(exc):  # no engine on the socket (it is restarting): nothing ran
            raise SandboxSetupError(f"cannot reach the engine to create the sandbox: {exc}", Failure.ENGINE_AWAY)
        raise SandboxSetupError(f"cannot create the sandbox container: {exc}", Failure.ENGINE_FAULT)


def _unreachable(exc: BaseException) -> bool:
    """The engine could not be connected to (its socket gone or refusing), directly or as the cause of
    the SDK's own error (a new client asks the engine's version first)."""
    return any(isinstance(e, requests.exceptions.ConnectionError) for e in (exc, exc.__cause__, exc.__context__))


@dataclass
class Serving:
    """The helper's ``serve`` exec of a reused sandbox: every program after the first is a frame on it."""

    exec_id: str
    stream: ExecStream


class Sandbox:
    """One started, locked-down container: ``create`` -> programs by exec -> ``remove``."""

    def __init__(self, container_id: str, image_id: str, profile: Profile, created_at: float) -> None:
        self.container_id = container_id
        self.image_id = image_id
        self.profile = profile
        self.created_at = created_at  # wall clock, for the engine's event log
        self.cgroup = CgroupReader(container_id)
        # The program's share of memory now (``set_memory``); None: not known (an adopted sandbox).
        self.memory_mb: int | None = profile.limits.memory_mb
        self.killed_at: float | None = None
        self.last_reading = Reading()
        self.baseline = Reading()  # subtracted from readings (gVisor's idle kernel); zero under runc
        self.streams: list[ExecStream] = []
        # The engine forgot an exec: it forgets every exec of a container that stopped (under gVisor
        # the container can stop before the exec's end is recorded).
        self.exec_lost = False
        self.frozen = False
        self.stopped_inside = False  # the program's processes SIGSTOPped (``stop_inside``)
        self.collect_error = ""  # why the last artifact collection could not run, if it could not
        self._runsc_root: str | None = None
        self.serving: Serving | None = None  # the serve exec its next program is a frame on (``reset``)
        self.serve_lost = ""  # why its serve exec cannot be trusted any more (then it is never reused)
        # The interpreter its serve exec starts ahead after a clean reset: its last program's (``launched``).
        self.prestart: helper.Prestart | None = None
        # Its main process is the helper's ``await``: one program may come over ``attach`` (``attach``).
        self.attachable = False
        self.attached = False  # that has happened: the main process no longer waits for a program

    @property
    def api(self):
        return engine.client().api

    @property
    def limits(self) -> Limits:
        return self.profile.limits

    @property
    def killed(self) -> bool:
        return self.killed_at is not None

    @classmethod
    def create(
        cls,
        profile: Profile,
        *,
        run_id: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        attachable: bool = False,
    ) -> Sandbox:
        """Create and start a sandbox of ``profile`` labelled ``run_id``; raises ``SandboxSetupError``.
        ``attachable``: its main process awaits one program over ``attach`` (``policy.container_config``)."""
        if not _RUN_ID.match(run_id):
            raise SandboxSetupError("run_id must be letters, digits, '_', '.', '-'")
        try:
            config = container_config(
                profile, name=name or f"crucible-{run_id}", run_id=run_id, labels=labels, attachable=attachable
            )
        except (OSError, ValueError) as exc:
            raise SandboxSetupError(f"cannot load the sandbox policy: {exc}")
        created_at = time.time()
        container = _create_container(config)
        sandbox = cls(container.id, container.attrs.get("Image", ""), profile, created_at)
        sandbox.attachable = attachable
        try:
            container.start()
        except Exception as exc:
            sandbox.remove()
            raise SandboxSetupError(
                f"the engine could not start the sandbox container: {_explain(exc)}", Failure.ENGINE_FAULT
            )
        sandbox.cgroup = CgroupReader(container.id)
        sandbox.measure_baseline()
        return sandbox

    @classmethod
    def adopt(cls, container_id: str, profile: Profile) -> Sandbox:
        """A started, idle sandbox of ``profile`` that another process created (a warm pool's)."""
        attrs = engine.client().api.inspect_container(container_id)
        created = datetime.strptime(attrs["Created"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        sandbox = cls(container_id, attrs.get("Image", ""), profile, created)
        config = attrs.get("Config") or {}
        sandbox.attachable = bool(config.get("OpenStdin")) and config.get("Cmd") == helper.AWAIT_COMMAND
        # A batch's sandbox is parked with its last program's limit: unknown here, so always set.
        sandbox.memory_mb = None
        sandbox.measure_baseline()
        return sandbox

    def measure_baseline(self) -> None:
        """What gVisor's own kernel uses before any program runs; readings report the program's share."""
        if is_gvisor(self.profile.engine_runtime) and self.cgroup.available:
            self.baseline = self.cgroup.read()

    # --- programs ---------------------------------------------------------------------------
    def open_exec(
        self, argv: list[str], *, workdir: str, environment: dict, stdin: bool = False, user: str = SANDBOX_USER
    ):
        """Start ``argv`` in the sandbox as the sandbox user (or ``user``: an evidence collection beside a
        program that could not be cleared); returns (exec id, its ``ExecStream``)."""
        exec_id = self.api.exec_create(
            self.container_id,
            argv,
            stdin=stdin,
            stdout=True,
            stderr=True,
            user=user,
            workdir=workdir,
            environment=environment,
        )["Id"]
        stream = ExecStream(self.api.exec_start(exec_id, socket=True))
        self.streams.append(stream)
        return exec_id, stream

    def launch(self, argv: list[str], *, workdir: str, environment: dict) -> tuple[str, ExecStream]:
        """Start a launcher (``helper.launch_argv``), which waits for its payload on stdin; returns (exec
        id, its ``ExecStream``). With a serve exec (``serving``) nothing starts: its exec and stream are
        returned, for the program's frame (``helper.launch_frame``)."""
        if self.serving is not None:
            return self.serving.exec_id, self.serving.stream
        return self.open_exec(argv, workdir=workdir, environment=environment, stdin=True)

    def attach(self) -> ExecStream:
        """The stream of the main process (``attachable``: the helper's ``await``), which waits for its
        program's frame on stdin and writes nothing before it. Once only: it runs one program. Closing
        the stream closes its stdin: the main process then exits with the program's status."""
        if not self.attachable or self.attached:
            raise SandboxSetupError("this sandbox's main process does not wait for a program")
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        stream = ExecStream(self.api.attach_socket(self.container_id, params=params))
        self.attached = True
        self.streams.append(stream)
        return stream

    def main_state(self) -> tuple[bool, int | None]:
        """(still running, exit code) of the container's main process, from the engine (``exec_state``
        of an attached program: the main process runs it). A container the engine no longer knows
        ended: (False, None). An engine that cannot answer raises, as ``exec_state`` does: "the engine
        cannot say" is not "the program ended" (read so, a run that asked while the engine restarted
        ended ``failed`` with no exit code instead of being run again as an engine fault)."""
        try:
            state = self.api.inspect_container(self.container_id).get("State") or {}
        except docker.errors.NotFound:
            return False, None
        return bool(state.get("Running")), None if state.get("Running") else state.get("ExitCode")

    def stop_serving(self, problem: str = "") -> None:
        """Close the serve exec (it exits at the end of its stdin); with ``problem`` (something went
        wrong on it) the sandbox is never reset for another program (``reset`` says why)."""
        if problem and not self.serve_lost:
            self.serve_lost = problem
        if self.serving is not None:
            self.close_exec(self.serving.stream)
            self.serving = None

    def serve_idle(self) -> bool:
        """Its serve exec is open and silent: the container still runs and nothing wrote to it since its
        reset (checked locally: a container removed under it hangs the exec's connection up)."""
        stream = self.serving.stream if self.serving is not None else None
        return stream is not None and not stream.closed and not _readable(stream.raw, 0)

    def close_exec(self, stream: ExecStream) -> None:
        stream.close()
        if stream in self.streams:
            self.streams.remove(stream)

    def exec_state(self, exec_id: str) -> tuple[bool, int | None]:
        """(still running, exit code) of one exec, from the engine, not from anything in the sandbox.

        An exec the engine no longer knows ended with its container: (False, None), ``exec_lost`` set."""
        try:
            info = self.api.exec_inspect(exec_id)
        except docker.errors.NotFound:
            self.exec_lost = True
            return False, None
        return bool(info.get("Running")), info.get("ExitCode")

    def container_state(self) -> dict:
        """The engine's ``State`` of the container (empty when the engine cannot say)."""
        try:
            return self.api.inspect_container(self.container_id).get("State") or {}
        except Exception:
            return {}

    def container_gone(self) -> bool:
        """The engine says the container is no longer running (removed or stopped under its run); False
        when the engine cannot say."""
        try:
            state = self.api.inspect_container(self.container_id).get("State") or {}
        except docker.errors.NotFound:
            return True
        except Exception:
            return False
        return not state.get("Running", False)

    # --- resources ---------------------------------------------------------------------------
    def set_memory(self, memory_mb: int) -> None:
        """Narrow (or widen again) the memory the next program gets, up to what the sandbox was created
        with: a compiled runtime's compile step and its program each get their own limit. Through the
        host cgroup (runc and gVisor), else the engine's update (runc only: runsc has none). Raises
        ``SandboxSetupError`` when the limit cannot be set: the program never runs with more."""
        if memory_mb == self.memory_mb:
            return
        if memory_mb > self.profile.limits.memory_mb:
            raise SandboxSetupError(f"{memory_mb} MB is over the {self.profile.limits.memory_mb} MB this sandbox has")
        host_mb = host_memory_mb(replace(self.profile.limits, memory_mb=memory_mb), self.profile.engine_runtime)
        if not self.cgroup.set_memory_limit(host_mb * MIB):
            if is_gvisor(self.profile.engine_runtime):
                raise SandboxSetupError(
                    "cannot set the memory limit of a gVisor sandbox whose host cgroup is not visible"
                )
            try:
                self.api.update_container(self.container_id, mem_limit=f"{host_mb}m", memswap_limit=f"{host_mb}m")
            except docker.errors.DockerException as exc:
                raise SandboxSetupError(
                    f"the engine would not set the memory limit: {exc}", Failure.ENGINE_FAULT
                ) from exc
        self.memory_mb = memory_mb

    def read_counters(self) -> Reading:
        """Memory, peak, CPU time, pids and OOM kills now (the last reading once killed)."""
        if self.killed:
            return self.last_reading
        reading = self.cgroup.read() if self.cgroup.available else self._engine_reading()
        reading = self._less_baseline(reading)
        peaks = (reading.peak_memory_bytes, reading.memory_bytes, self.last_reading.peak_memory_bytes)
        reading.peak_memory_bytes = max((value for value in peaks if value), default=None)
        if reading.cpu_ns is None:
            reading.cpu_ns = self.last_reading.cpu_ns
        self.last_reading = reading
        return reading

    def _less_baseline(self, reading: Reading) -> Reading:
        base = self.baseline
        for name in ("memory_bytes", "peak_memory_bytes", "pids"):
            value, idle = getattr(reading, name), getattr(base, name)
            if value is not None and idle:
                setattr(reading, name, max(0, value - idle))
        return reading

    def _engine_reading(self) -> Reading:
        try:
            return reading_from_engine_stats(self.api.stats(self.container_id, stream=False, one_shot=True))
        except Exception:
            return Reading()

    def stopped_state(self, wait_s: float) -> dict:
        """The container's ``State`` once the engine reports it stopped (or after ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        state = self.container_state()
        while state.get("Running") and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.container_state()
        return state

    def oom_killed_by_engine(self) -> bool:
        return bool(self.container_state().get("OOMKilled"))

    def _logged(self, event: str) -> bool:
        """Did the engine log ``event`` for this container since its creation? Raises when it does not answer."""
        events = self.api.events(
            since=int(self.created_at) - EVENT_CLOCK_SLACK_S,
            until=int(time.time()) + EVENT_CLOCK_SLACK_S,
            filters={"container": [self.container_id], "event": [event]},
            decode=True,
        )
        return any(True for _ in events)

    def oom_event_recorded(self, wait_s: float) -> bool:
        """Did the engine log an "oom" event for this container? Looked for until ``wait_s`` has passed:
        it may come after the container stopped, when its state's ``OOMKilled`` was already written."""
        until = time.monotonic() + wait_s
        while True:
            try:
                if self._logged("oom") or self.oom_killed_by_engine():
                    return True
            except Exception as exc:
                log.info("oom events of %s: %s", self.container_id[:12], exc)
            if time.monotonic() >= until:
                return False
            time.sleep(OOM_EVENT_POLL_S)

    def killed_through_engine(self) -> bool:
        """Did anyone ask the engine to signal this container (our kill, an operator's ``docker kill``)?
        An engine that does not answer counts as yes (the cautious answer for ``verdict``)."""
        try:
            return self._logged("kill")
        except Exception:
            return True

    def killed_by_the_host_kernel(self, state: dict) -> bool:
        """A gVisor sandbox SIGKILLed with nobody asking the engine to (no "kill" event) was killed by
        the host's kernel at its limits (the OOM killer at its memory limit): the engine does not always
        record that (seen with a program allocating fast, e.g. Node.js filling buffers: exit 137,
        OOMKilled false). Never true under runc, where the sandbox's own kernel kills a process inside."""
        if not is_gvisor(self.profile.engine_runtime):
            return False
        if state.get("ExitCode") != 128 + signal.SIGKILL or self.engine_lost():
            return False
        return not self.killed_through_engine()

    def engine_lost(self) -> bool:
        """Did the engine restart under this sandbox? Its event log starts empty after a restart, so
        the container's "create" event is missing then. An engine that does not answer counts as lost."""
        try:
            return not self._logged("create")
        except Exception:
            return True

    # --- the process view and freezing (evidence of a safety stop) -----------------------------
    def process_view(self) -> list[processes.Process]:
        """The processes in the sandbox now (pid, parent, name); empty when this host cannot see them."""
        if self.killed or not processes.local_engine():
            return []
        if is_gvisor(self.profile.engine_runtime):
            root = self.runsc_root()
            return processes.runsc_view(self.container_id, root) if root else []
        procs = self.cgroup.procs_file()
        return processes.runc_view(procs) if procs is not None else []

    def runsc_root(self) -> str:
        """Under gVisor, the runsc root the engine runs this sandbox with ("" when not found from here)."""
        if self._runsc_root is None:
            found = processes.runsc_root(self.container_id) if processes.local_engine() else None
            self._runsc_root = found or ""
        return self._runsc_root

    def can_stop_inside(self) -> bool:
        """Can every process inside be stopped by signal from here: under gVisor with its runsc on this
        host, under runc with the container's pids cgroup visible here."""
        if self.killed:
            return False
        if is_gvisor(self.profile.engine_runtime):
            return bool(self.runsc_root())
        return processes.local_engine() and self.cgroup.procs_file() is not None

    def stop_inside(self) -> bool:
        """SIGSTOP every process of the program (a process cannot ignore it): another way to freeze the
        sandbox, which unlike the engine's pause leaves it able to take signals. False when it could not.

        Under gVisor ``runsc kill --all`` (twice, for a child forked while the first went round; runsc
        refuses to signal a paused sandbox); its init too, which ``kill_stopped_programs`` lets go on
        only once it has killed the rest. Under runc host signals to the container's processes, round
        after round until no new one appears (the engine's pause, the cgroup freezer, can fail under a
        fork bomb: "unable to freeze")."""
        if is_gvisor(self.profile.engine_runtime):
            root = self.runsc_root()
            if not root or not processes.runsc_kill(self.container_id, root, "STOP"):
                return False
            self.stopped_inside = True
            processes.runsc_kill(self.container_id, root, "STOP")
            self.read_counters()
            return True
        keep, seen = self._runc_keep(), set()
        if not keep:
            return False
        for _ in range(HOST_SIGNAL_ROUNDS):
            fresh = [p.pid for p in self._runc_view() if p.pid not in keep and p.pid not in seen]
            if not fresh:
                break
            seen.update(fresh)
            _signal_all(fresh, signal.SIGSTOP)
        self.read_counters()
        self.stopped_inside = True
        return True

    def kill_stopped_programs(self, deadline: float) -> int:
        """Once ``stop_inside`` has stopped them: SIGKILL every process inside but its init and the idle
        main process, until ``deadline`` (monotonic); they cannot fork meanwhile. Returns how many were
        signalled.

        Under runc host signals, the deepest first: a parent killed before its stopped children would
        orphan their process group, which Linux wakes with SIGHUP and SIGCONT (a program that ignores
        SIGHUP would run again). Under gVisor see ``_kill_stopped_top_down``."""
        if not self.stopped_inside:
            return 0
        if is_gvisor(self.profile.engine_runtime):
            return self._kill_stopped_top_down(deadline)
        keep, signalled = self._runc_keep(), 0
        for _ in range(HOST_SIGNAL_ROUNDS):
            view = [p for p in self._runc_view() if p.pid not in keep]
            if not view or time.monotonic() >= deadline:
                break
            for level in processes.deepest_first(view, keep):
                signalled += _signal_all(level, signal.SIGKILL)
        return signalled

    def _kill_stopped_top_down(self, deadline: float) -> int:
        """Under gVisor, one ``runsc kill --pid`` per process, a few at a time, the top of the tree first,
        the next level once every child of the last one has been handed to init; init stays stopped
        (``stop_inside``) until the end, and is then let go on to reap them all.

        gVisor wakes (SIGHUP, SIGCONT) every member of a process group with a stopped member whenever a
        process of it is reaped while it counts no parent outside the group in its session: always for
        a group in a session of its own (which a program may make), and wrongly after a reparenting
        (a child reaped by init lowers the count it never raised). Nothing is reaped meanwhile here:
        each process dies a child of stopped init, never of a process of the program, which could
        reap it at once (SIGCHLD ignored)."""
        root, view = self.runsc_root(), self.process_view()
        keep = processes.init_and_idle(view, 1)
        parents = {p.pid: p.ppid for p in view}
        left, signalled = set(parents) - keep, 0

        def kill_one(pid: int) -> bool:
            return time.monotonic() < deadline and processes.runsc_kill(self.container_id, root, "KILL", pid=pid)

        try:
            with ThreadPoolExecutor(STOPPED_KILL_WORKERS, thread_name_prefix="sandbox-kill") as pool:
                while left and time.monotonic() < deadline:
                    top = sorted(pid for pid in left if parents.get(pid) not in left)
                    killed = {pid for pid, done in zip(top, pool.map(kill_one, top), strict=True) if done}
                    signalled += len(killed)
                    left.difference_update(top)
                    parents = self._handed_to_init(root, killed, left, deadline)
        finally:
            processes.runsc_kill(self.container_id, root, "CONT", pid=1)
        return signalled

    def _handed_to_init(self, root: str, killed: set[int], left: set[int], deadline: float) -> dict[int, int]:
        """Wait until no process of ``left`` is a child of one of ``killed`` (they have exited and init
        has their children), at most until ``deadline``; the parent of each process, as last seen."""
        while True:
            parents = {p.pid: p.ppid for p in processes.runsc_view(self.container_id, root)}
            if not parents or time.monotonic() >= deadline:
                return parents
            if not any(parents.get(pid) in killed for pid in left):
                return parents
            time.sleep(HANDED_TO_INIT_POLL_S)

    def _runc_view(self) -> list[processes.Process]:
        procs = self.cgroup.procs_file()
        return processes.runc_view(procs) if procs is not None else []

    def _runc_keep(self) -> set[int]:
        """Under runc, the host pids of the container's init and its idle main process (empty: unknown)."""
        init = self.container_state().get("Pid") or 0
        if not init:
            return set()
        return processes.init_and_idle(self._runc_view(), init)

    def freeze(self) -> bool:
        """Pause every process in the sandbox (the engine's pause: the cgroup freezer under runc, runsc's
        pause under gVisor): the program makes no progress after it, and its files stay. Counters are
        read first. False when the engine would not (the caller then kills)."""
        if self.killed:
            return False
        self.read_counters()
        try:
            self.api.pause(self.container_id)
        except Exception as exc:
            log.warning("pause %s: %s", self.container_id[:12], exc)
            return False
        self.frozen = True
        return True

    def kill_frozen_programs(self) -> int:
        """Under runc, while frozen: SIGKILL every host process of the container but its init and the idle
        main process (they die as they thaw, before they can fork again). Returns how many were
        signalled; 0 under gVisor (``runsc kill`` refuses a paused sandbox) or when not visible here."""
        if not self.frozen or is_gvisor(self.profile.engine_runtime) or not processes.local_engine():
            return 0
        procs = self.cgroup.procs_file()
        init = self.container_state().get("Pid") or 0
        if procs is None or not init:
            return 0
        view = processes.runc_view(procs)
        keep = processes.init_and_idle(view, init)
        return _signal_all([p.pid for p in view if p.pid not in keep], signal.SIGKILL)

    def thaw(self) -> bool:
        """Unpause the sandbox; False when the engine would not."""
        if not self.frozen:
            return True
        try:
            self.api.unpause(self.container_id)
        except Exception as exc:
            log.warning("unpause %s: %s", self.container_id[:12], exc)
            return False
        self.frozen = False
        return True

    # --- ending ------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL every process in the container (counters are read first: the cgroup goes with it)."""
        if self.killed:
            return
        self.read_counters()
        self.killed_at = time.monotonic()
        self.stop_serving()
        for stream in self.streams:
            stream.close()
        self.streams.clear()
        if self.stopped_inside and is_gvisor(self.profile.engine_runtime) and self._kill_stopped_sandbox():
            return
        try:
            self.api.kill(self.container_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running any more
                log.warning("kill %s: %s", self.container_id[:12], exc)

    def _kill_stopped_sandbox(self) -> bool:
        """Kill a gVisor sandbox whose processes were stopped (``stop_inside``) through runsc: wake every
        process inside and SIGKILL them all (whatever is left of the program runs for the few
        milliseconds between the two). True once the engine reports the container stopped.

        The engine's kill is not used for it: with a stopped process inside (its idle main process at
        least) it could hang until its call timed out (30 s, measured), and it could also when it
        came while the container was stopping after runsc's kill."""
        root = self.runsc_root()
        if not root:
            return False
        processes.runsc_kill(self.container_id, root, "CONT")
        if not processes.runsc_kill(self.container_id, root, "KILL"):
            return False
        return not self.stopped_state(STOPPED_KILL_WAIT_S).get("Running", True)

    def terminate_programs(self) -> None:
        """SIGTERM every process of the sandbox user but the idle main process (which ignores it)."""
        try:
            exec_id = self.api.exec_create(self.container_id, TERM_ALL_COMMAND, user=SANDBOX_USER, workdir="/")
            self.api.exec_start(exec_id["Id"], detach=True)
        except Exception as exc:  # e.g. the pids limit is exhausted: the grace then ends with SIGKILL
            log.info("SIGTERM exec in %s failed: %s", self.container_id[:12], exc)

    def kill_programs(self) -> None:
        """SIGKILL every process a program left behind, and wait for that, so the sandbox's next program
        starts among none of them; raises ``SandboxSetupError`` (``ENGINE_FAULT``) when that fails. (It
        kills the serve exec too: the next program starts by exec.)"""
        self.stop_serving("")
        try:
            exec_id = self.api.exec_create(self.container_id, helper.reap_argv(), user=SANDBOX_USER, workdir="/")
            self.api.exec_start(exec_id["Id"])
            exit_code = self.api.exec_inspect(exec_id["Id"]).get("ExitCode")
        except Exception as exc:
            raise SandboxSetupError(f"cannot clear the sandbox between programs: {exc}", Failure.ENGINE_FAULT)
        if exit_code != 0:
            raise SandboxSetupError(
                f"cannot clear the sandbox between programs (exit {exit_code})", Failure.ENGINE_FAULT
            )

    def reset(self, *, serve: bool = False) -> str:
        """Make the sandbox as it was before its first program, for the next sample of the same batch:
        every process of the sandbox user killed, every writable place emptied, and that verified
        (the helper's ``reap reset``). Returns "" when it is clean, else why not (then discard it).

        With a serve exec, or ``serve`` (one is started: the next program is handed over in this
        process), its reset frame does it, and the sandbox keeps it for its next program; the reply
        must come whole, with the frame's nonce, on both streams and with nothing else on them. Then,
        with ``SANDBOX_PRESTART``, the serve exec starts the interpreter of a program launched as the
        last one was (``prestart``, a Python program's) ahead: the next program uses it when it is
        launched the same way, else serve kills it."""
        if self.killed:
            return "the sandbox was killed"
        if self.serve_lost:
            return f"its serve exec failed: {self.serve_lost}"
        dirs = (*RESET_DIRS, BUILD_DIR) if self.profile.build_dir else RESET_DIRS
        if serve or self.serving is not None:
            return self._reset_serving(dirs)
        try:
            argv = helper.reset_argv(dirs)
            exec_id = self.api.exec_create(self.container_id, argv, user=SANDBOX_USER, workdir="/")
            output = self.api.exec_start(exec_id["Id"], demux=True)
            exit_code = self.api.exec_inspect(exec_id["Id"]).get("ExitCode")
        except Exception as exc:
            return f"the reset could not run: {exc}"
        if exit_code != 0:
            stderr = (output[1] if isinstance(output, tuple) else b"") or b""
            return stderr.decode("utf-8", "replace").strip()[:500] or f"the reset failed (exit {exit_code})"
        return ""

    def _reset_serving(self, dirs: tuple[str, ...]) -> str:
        try:
            if self.serving is None:
                exec_id, stream = self.open_exec(helper.SERVE_COMMAND, workdir="/", environment={}, stdin=True)
                self.serving = Serving(exec_id, stream)
            nonce = secrets.token_bytes(helper.NONCE_BYTES)
            self.serving.stream.send(
                helper.reset_frame(nonce, dirs), settings.SANDBOX_ENGINE_TIMEOUT_S, then_close=False
            )
            problem = _reset_reply(self.serving.stream, nonce, time.monotonic() + settings.SANDBOX_ENGINE_TIMEOUT_S)
            if not problem and self.prestart is not None and settings.SANDBOX_PRESTART:
                self.serving.stream.send(self.prestart.frame(), settings.SANDBOX_ENGINE_TIMEOUT_S, then_close=False)
        except Exception as exc:
            problem = f"the reset could not run: {exc}"
        if problem:
            self.stop_serving(problem)
        return problem

    def remove(self) -> None:
        """Remove the container, trying a few times; what is left is the reconciler's to remove."""
        self.stop_serving()
        if self.attached and not self.killed:
            self._wait_for_the_main_process()
        for attempt in range(1, REMOVE_ATTEMPTS + 1):
            try:
                containers.remove(self.container_id)
                return
            except Exception as exc:
                log.warning("remove %s (attempt %d): %s", self.container_id[:12], attempt, exc)
                time.sleep(REMOVE_PAUSE_S)
        log.error("could not remove sandbox container %s; the reconciler will", self.container_id[:12])

    def _wait_for_the_main_process(self) -> None:
        """An attached program's main process exits once its stream is closed: a container that stopped
        by itself is removed faster than one the removal has to kill (gVisor's most of all)."""
        for stream in self.streams:
            stream.close()
        try:
            self.api.wait(self.container_id, timeout=MAIN_EXIT_WAIT_S)
        except Exception as exc:  # not stopped in time: the removal kills it
            log.debug("waiting for %s to stop: %s", self.container_id[:12], exc)

    # --- artifacts ---------------------------------------------------------------------------
    def collect_artifacts(
        self, deadline_s: float = COLLECT_DEADLINE_S, directory: str = OUTPUT_DIR, user: str = SANDBOX_USER
    ) -> tuple[list[ParsedArtifact], bool, int]:
        """The files left in /output (or ``directory``: a session's workspace) within the artifact caps,
        whether the list is incomplete, and how many files were left out for their name
        (``streams.MAX_NAME_BYTES``)."""
        limits = self.limits
        if limits.artifact_max_files == 0 or limits.artifact_max_bytes == 0:
            return [], False, 0
        parser = ArtifactStreamParser(max_files=limits.artifact_max_files, max_bytes=limits.artifact_max_bytes)
        argv = helper.collect_argv(directory, limits.artifact_max_files, limits.artifact_max_bytes)
        stream = None
        try:
            _exec_id, stream = self.open_exec(argv, workdir="/", environment={}, user=user)
            self._read_records(stream, parser, time.monotonic() + deadline_s)
        except ProtocolError:
            pass
        except Exception as exc:
            log.info("artifact collection in %s failed: %s", self.container_id[:12], exc)
            self.collect_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            if stream is not None:
                self.close_exec(stream)
        if not (parser.done or parser.failed or self.collect_error):
            self.collect_error = "the collector did not finish (its deadline, or the sandbox stopped)"
        elif parser.failed and not self.collect_error:
            self.collect_error = "the collector's output was not understood (it could not start, or was cut)"
        parser.finish()
        return parser.artifacts, parser.truncated, parser.skipped_names

    def _read_records(self, stream: ExecStream, parser: ArtifactStreamParser, deadline: float) -> None:
        limits = self.limits
        # Anything far beyond the caps plus the framing of the records is hostile.
        stream_cap = (
            limits.artifact_max_bytes + (limits.artifact_max_files + 2) * COLLECT_RECORD_OVERHEAD + COLLECT_SLACK_BYTES
        )
        while not (parser.done or parser.failed):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            pieces = stream.read(min(left, COLLECT_READ_WAIT_S))
            if pieces is None or stream.received > stream_cap:
                return
            for kind, piece in pieces:
                if kind == STDOUT:
                    parser.feed(piece)
