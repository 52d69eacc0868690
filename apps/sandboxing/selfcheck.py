"""Self-check: run a canary through the real policy and report what the engine does not enforce.

``self_check()`` returns a list of problems (empty when everything holds); the result is cached per
process for ``CACHE_SECONDS`` per (image, runtime). ``require_policy()`` raises
``SandboxUnavailable`` when there is any problem, so callers fail closed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from django.conf import settings

from apps.sandboxing.engine_runtime import is_gvisor
from apps.sandboxing.incontainer import source
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import Limits, runtime_for
from apps.sandboxing.runner import run

CACHE_SECONDS = 600
# A failed check is retried sooner: the engine may only have been restarting.
FAILURE_CACHE_SECONDS = 15
_cache: dict[tuple[str, str], tuple[float, list[str]]] = {}
_lock = threading.Lock()


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
            run_id=f"selfcheck-{uuid.uuid4()}",
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


def self_check(*, force: bool = False) -> list[str]:
    key = (settings.SANDBOX_IMAGE, settings.SANDBOX_RUNTIME)
    with _lock:
        cached = _cache.get(key)
        ttl = FAILURE_CACHE_SECONDS if cached and cached[1] else CACHE_SECONDS
        if cached and not force and time.monotonic() - cached[0] < ttl:
            return list(cached[1])
    limits = Limits.from_settings(timeout_s=min(20.0, settings.SANDBOX_MAX_TIMEOUT_S))
    try:
        problems = _problems(limits)
    except Exception as exc:  # the engine is unreachable, the policy cannot be loaded, ...
        problems = [f"self-check failed: {type(exc).__name__}: {exc}"]
    with _lock:
        _cache[key] = (time.monotonic(), problems)
    return list(problems)


def require_policy() -> None:
    problems = self_check()
    if problems:
        raise SandboxUnavailable("; ".join(problems))
