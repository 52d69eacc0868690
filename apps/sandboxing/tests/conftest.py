"""Helpers for runner tests against the real Docker engine: small limits, recorded output and
commands, and a check after every test that none of this test process's containers is left behind.

Timing assertions state a property ("not before the limit", "within the limit plus ``SLACK_S``"),
never a tight figure: the suite runs on a busy machine, and speed is measured in ``bench/``.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from dataclasses import dataclass, field

import pytest

from apps.sandboxing import engine_runtime
from apps.sandboxing.containers import list_instance_containers
from apps.sandboxing.engine_runtime import RuntimeUnknown
from apps.sandboxing.outcomes import ResourceSample, RunRequest, RunResult
from apps.sandboxing.policy import Limits, Profile, runtime_for
from apps.sandboxing.pool import WarmPool, remove_pools_of
from apps.sandboxing.runner import profile_for, run
from apps.sandboxing.sandbox import SandboxSetupError

# SANDBOX_TEST_POOL=1 (make test's third pass): every run takes a sandbox from a warm pool, so the
# adversarial cases are proven against pool sandboxes too.
THROUGH_WARM_POOL = os.environ.get("SANDBOX_TEST_POOL") == "1"

# How late the runner may act on a limit or a command when the machine is busy: generous, since
# it bounds a property ("it did end"), not a speed.
SLACK_S = 5.0


@dataclass
class Observed:
    """What a test saw of one run: the result, output chunks, samples, and when control was asked."""

    result: RunResult
    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    samples: list[ResourceSample] = field(default_factory=list)
    control_calls: list[float] = field(default_factory=list)
    commands: list[tuple[float, object]] = field(default_factory=list)  # (seconds since the call, answer)
    wall_s: float = 0.0
    run_id: str = ""

    @property
    def first_command_at(self) -> float:
        return self.commands[0][0]

    def stream(self, name: str) -> bytes:
        return b"".join(data for stream, data in self.chunks if stream == name)

    @property
    def stdout(self) -> bytes:
        return self.stream("stdout")

    @property
    def stderr(self) -> bytes:
        return self.stream("stderr")

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def under_gvisor() -> bool:
    """Whether sandboxes get gVisor now (``make test`` runs this suite once per runtime)."""
    return engine_runtime.is_gvisor(engine_runtime.chosen())


def small_limits(**overrides) -> Limits:
    base = Limits.from_settings(timeout_s=3, memory_mb=64, cpus=1)
    values = {"pids": 64, "output_cap_bytes": 256 * 1024, "tmpfs_mb": 16, "tmpfs_inodes": 1024, "fsize_mb": 16}
    values["kill_grace_s"] = 1.0
    values["artifact_max_files"] = 32
    values["artifact_max_bytes"] = 4 * 1024 * 1024
    values.update(overrides)
    return dataclasses.replace(base, **values)


def execute(
    code: str | bytes,
    *,
    language: str = "python",
    stdin: bytes = b"",
    control=None,
    keep_output: bool = True,
    on_output=None,
    runtime=None,
    **limits,
) -> Observed:
    """Run ``code`` through the real runner with small limits and record everything it reports.

    ``control(seconds_since_call, stdout_so_far)`` answers the runner's control polls.
    """
    chunks: list[tuple[str, bytes]] = []
    samples: list[ResourceSample] = []
    calls: list[float] = []
    commands: list[tuple[float, object]] = []
    start = time.monotonic()

    def record(stream: str, data: bytes) -> None:
        assert stream in ("stdout", "stderr")
        assert 0 < len(data) <= 64 * 1024
        if on_output is not None:
            on_output(stream, data)
        if keep_output:
            chunks.append((stream, data))

    def poll():
        at = time.monotonic() - start
        calls.append(at)
        if control is None:
            return None
        answer = control(at, b"".join(data for stream, data in chunks if stream == "stdout"))
        if answer is not None:
            commands.append((at, answer))
        return answer

    request = RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime or runtime_for(language),
        code=code.encode() if isinstance(code, str) else code,
        stdin=stdin,
        limits=small_limits(**limits),
    )
    if not THROUGH_WARM_POOL:
        result = run(request, on_output=record, control=poll, on_sample=samples.append)
        return Observed(result, chunks, samples, calls, commands, time.monotonic() - start, request.run_id)
    owner = f"test-pool-{uuid.uuid4().hex[:8]}"
    try:
        warmed = _warm(owner, profile_for(request))
        result = run(request, on_output=record, control=poll, on_sample=samples.append, pool_owner=owner)
        assert result.warm == warmed, "a run with a warm sandbox of its profile must take it"
    finally:
        remove_pools_of(owner)
    return Observed(result, chunks, samples, calls, commands, time.monotonic() - start, request.run_id)


def _warm(owner: str, profile: Profile) -> bool:
    """Start one idle sandbox of ``profile`` for ``owner``; False when the engine refuses it (the test
    is then about that refusal, and the run starts cold and meets it again)."""
    try:
        return WarmPool(owner, 1, lambda: [profile]).refill_once() == 1
    except (SandboxSetupError, RuntimeUnknown):
        return False


@pytest.fixture(autouse=True)
def no_container_left_behind():
    yield
    assert list_instance_containers() == []
