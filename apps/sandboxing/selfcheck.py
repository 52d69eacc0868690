"""Self-check: run a canary through the real policy and report what the engine does not enforce.

``self_check()`` returns a list of problems (empty when everything holds); the result is cached per
process for ``CACHE_SECONDS`` per (engine, image, runtime). ``require_policy()`` raises
``SandboxUnavailable`` when there is any problem, so callers fail closed. A process that takes runs
(a worker, a session host) keeps its verdict fresh in a thread (``Refresher``), so no run waits for
the canary (under gVisor about 0.6 s), neither the first after its start nor one every cache period.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid

from django.conf import settings

from apps.sandboxing import containers
from apps.sandboxing.engine_runtime import is_gvisor
from apps.sandboxing.incontainer import source
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import Limits, runtime_for
from apps.sandboxing.runner import run

log = logging.getLogger(__name__)

CACHE_SECONDS = 600
# A failed check is retried sooner: the engine may only have been restarting.
FAILURE_CACHE_SECONDS = 15
# A refresher checks again this long before a passed verdict expires.
REFRESH_AHEAD_SECONDS = 60
STOP_WAIT_S = 30  # for a refresher's canary to end (its own timeout is at most 20 s)
CANARY_RUN_PREFIX = "selfcheck-"  # a canary's run id: this, then a uuid
# A canary removes its container when it ends, unless the engine went away under it (restarted
# between the create and the start, or killed mid-run). One older than this is left over.
CANARY_LEFT_AFTER_S = 600
_cache: dict[tuple[str, str, str], tuple[float, list[str]]] = {}
_lock = threading.Lock()
_checking = threading.Lock()  # one canary at a time: a caller that finds one running waits for its verdict


def _forget_locks() -> None:
    """A forked child (RQ's work horse) gets locks of its own: one a refresher thread held at the fork
    would never be released there (the thread is not in the child)."""
    global _lock, _checking
    _lock, _checking = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_locks)


class SandboxUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _problems(limits: Limits) -> list[str]:
    """Run the canary (``incontainer/canary.py``) through the real runner and judge what it reports."""
    output = bytearray()

    def keep(_stream: str, data: bytes) -> None:
        output.extend(data)

    result = run(
        RunRequest(
            run_id=f"{CANARY_RUN_PREFIX}{uuid.uuid4()}",
            runtime=runtime_for("python"),
            code=source("canary").encode(),
            stdin=b"",
            limits=limits,
        ),
        on_output=keep,
        control=lambda: None,
    )
    if result.outcome is not Outcome.EXITED or result.exit_code != 0:
        return [f"the canary did not run: {result.outcome} {result.exit_code} {result.error}".strip()]
    try:
        facts = json.loads(bytes(output).decode())
    except ValueError:
        return ["the canary's report was unreadable"]
    return problems_in(facts, limits, gvisor=is_gvisor(result.engine_runtime))


def problems_in(facts: dict, limits: Limits, *, gvisor: bool = False) -> list[str]:
    """What the canary's ``facts`` show the engine does not enforce (empty when the policy holds).

    Under gVisor the program's process limit is gVisor's RLIMIT_NPROC (the engine's pids cgroup
    bounds gVisor's own host threads, and is not visible inside), and its system calls are served by
    gVisor's kernel, itself confined by gVisor's own seccomp filter on the host: runsc applies the
    engine's seccomp profile to the container's main process, not to exec'd programs."""
    problems = []
    if facts.get("uid") == 0 or facts.get("gid") == 0:
        problems.append("the program runs as root")
    for key in ("CapEff", "CapPrm", "CapBnd"):
        if facts.get(key) != "0" * 16:
            problems.append(f"{key} is {facts.get(key)!r}, not all zero")
    if facts.get("NoNewPrivs") != "1":
        problems.append("no-new-privileges is not set")
    if not gvisor and facts.get("Seccomp") != "2":
        problems.append("no seccomp filter is applied")
    if facts.get("root_writable"):
        problems.append("the root filesystem is writable")
    if facts.get("interfaces") != ["lo"]:
        problems.append(f"network interfaces other than lo: {facts.get('interfaces')}")
    if facts.get("packet_socket"):
        problems.append("raw packet sockets can be opened")
    if gvisor and facts.get("nproc") != limits.pids:
        problems.append(f"the process limit is not applied (RLIMIT_NPROC {facts.get('nproc')!r})")
    if not gvisor and facts.get("pids_max") != str(limits.pids):
        problems.append(f"the pids limit is not applied (pids.max {facts.get('pids_max')!r})")
    if facts.get("docker_sock"):
        problems.append("the Docker socket is visible")
    return problems


def left_canaries() -> list[str]:
    """This instance's canary containers older than ``CANARY_LEFT_AFTER_S`` (none runs that long): the
    ones an engine that went away under their run left behind. The reconciler removes them."""
    return [
        container_id
        for container_id, run_id in containers.instance_containers_older_than(CANARY_LEFT_AFTER_S)
        if run_id.startswith(CANARY_RUN_PREFIX)
    ]


def self_check(*, force: bool = False) -> list[str]:
    """The problems (none: the policy holds) from a verdict younger than its cache period, or from a
    canary run now; ``force``: a canary run now (or one that began after this call, when another
    caller's is running)."""
    key = _key()
    asked_at = time.monotonic()
    if not force and (cached := _cached(key)) is not None:
        return cached
    with _checking:
        # Another caller ran the canary while this one waited: its verdict will do.
        fresh = _cached(key, since=asked_at if force else None)
        if fresh is not None:
            return fresh
        limits = Limits.from_settings(timeout_s=min(20.0, settings.SANDBOX_MAX_TIMEOUT_S))
        checked_at = time.monotonic()
        try:
            problems = _problems(limits)
        except Exception as exc:  # the engine is unreachable, the policy cannot be loaded, ...
            problems = [f"self-check failed: {type(exc).__name__}: {exc}"]
        with _lock:
            _cache[key] = (checked_at, problems)
        return list(problems)


def _key() -> tuple[str, str, str]:
    """A verdict is about one engine, image and runtime."""
    return (settings.DOCKER_HOST, settings.SANDBOX_IMAGE, settings.SANDBOX_RUNTIME)


def _cached(key: tuple[str, str, str], *, since: float | None = None) -> list[str] | None:
    """The cached verdict while it is valid (and, with ``since``, only one checked after it)."""
    with _lock:
        cached = _cache.get(key)
    if cached is None or (since is not None and cached[0] < since):
        return None
    checked_at, problems = cached
    return list(problems) if time.monotonic() - checked_at < _valid_for(problems) else None


def _valid_for(problems: list[str]) -> float:
    return FAILURE_CACHE_SECONDS if problems else CACHE_SECONDS


def next_check_in() -> float:
    """Seconds until this process's verdict should be checked again: ``REFRESH_AHEAD_SECONDS`` before
    a passed one expires, when a failed one does; 0 when there is none."""
    with _lock:
        cached = _cache.get(_key())
    if cached is None:
        return 0.0
    checked_at, problems = cached
    ahead = REFRESH_AHEAD_SECONDS if not problems else 0.0
    return max(0.0, checked_at + _valid_for(problems) - ahead - time.monotonic())


class Refresher:
    """Runs the self-check in a daemon thread at once and again before each verdict expires, so the
    runs of this process find it cached. Callers still call ``self_check``/``require_policy``, which
    run the canary themselves if the verdict has expired all the same (the thread is late or stuck)."""

    def __init__(self, name: str = "sandbox-selfcheck") -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No check after this one; a canary running now is waited for (its container goes with it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)

    def _refresh(self) -> None:
        while not self._stop.wait(next_check_in()):
            try:
                problems = self_check(force=True)
            except Exception:  # self_check does not raise; a bug in it must not end the refresher
                log.exception("sandbox self-check: the refresher's check failed")
                self._stop.wait(FAILURE_CACHE_SECONDS)
                continue
            if problems:
                log.error("sandbox policy NOT enforced by this engine: %s", "; ".join(problems))


def require_policy() -> None:
    problems = self_check()
    if problems:
        raise SandboxUnavailable("; ".join(problems))
