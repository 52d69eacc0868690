"""The runner: one program, one fresh locked-down sandbox, a typed result.

``run`` creates a sandbox for the request's profile (``Sandbox.create``), delivers and supervises
the program in it (``execution.execute``) and removes it (``Sandbox.remove``,
``force``: SIGKILL to everything in it), always: at once, or in a worker behind its next job
(``removal``). It knows nothing about HTTP, users or the
database; callers read the ``RunResult``'s ``Outcome`` and ``Failure``, never its ``error`` text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from django.conf import settings

from apps.sandboxing import pool, removal
from apps.sandboxing.engine_runtime import RuntimeUnknown
from apps.sandboxing.execution import execute
from apps.sandboxing.outcomes import Command, Failure, Outcome, ResourceSample, RunRequest, RunResult
from apps.sandboxing.policy import LABEL_INSTANCE, LABEL_RUN, Profile
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError, attach_suits

log = logging.getLogger(__name__)

__all__ = [
    "LABEL_INSTANCE",
    "LABEL_RUN",
    "ResourceSample",
    "RunRequest",
    "RunResult",
    "Sandbox",
    "SandboxSetupError",
    "Ahead",
    "Program",
    "Reuse",
    "profile_for",
    "run",
    "run_programs",
]


def profile_for(request: RunRequest) -> Profile:
    """The sandbox a request runs in: its runtime's image, its limits, the configured engine runtime."""
    return Profile(
        image=request.runtime.image,
        limits=request.runtime.sandbox_limits(request.limits),
        build_dir=request.runtime.compiled,
    )


class Ahead:
    """The sandbox for ``request``, got in a thread while the caller does its own work before the run
    (a worker's claim of the row: 10-20 ms of queries), so the run does not wait for both one after
    the other: an idle one of ``pool_owner``'s warm pool when it has one of the request's profile
    (``pool.claim``: its rename, 5-10 ms), else a cold one created and started. It holds no code: the
    program is delivered by ``run`` once the caller decided to run it; otherwise ``discard`` removes
    it (when it is up, in that thread), a warm one too (it held no code either, but it was claimed).
    """

    def __init__(self, request: RunRequest, pool_owner: str | None = None):
        self.profile = profile_for(request)
        self.pool_owner = pool_owner
        self.began = time.monotonic()
        self._taken = False
        self._future: Future = _starter().submit(self._get, request.run_id)

    def _get(self, run_id: str) -> tuple[Sandbox, bool]:
        """The sandbox and whether it came from the warm pool."""
        if self.pool_owner:
            sandbox = pool.claim(self.pool_owner, self.profile, run_id)
            if sandbox is not None:
                return sandbox, True
        return Sandbox.create(self.profile, run_id=run_id, attachable=attach_suits(self.profile)), False

    def take(self) -> tuple[Sandbox, bool]:
        """The sandbox and whether it is warm; raises what ``Sandbox.create`` raised, or
        ``SandboxSetupError`` when it did not answer within the engine's timeout (then it is removed
        once it does)."""
        self._taken = True
        try:
            return self._future.result(timeout=settings.SANDBOX_ENGINE_TIMEOUT_S * 2 + 5)
        except FutureTimeout:
            self._taken = False
            self.discard()
            raise SandboxSetupError("the engine did not start the sandbox in time", Failure.ENGINE_FAULT)

    def discard(self) -> None:
        """Not used: remove the sandbox once it is up (nothing to do if its start failed)."""
        if self._taken:
            return
        self._taken = True

        def remove(future: Future) -> None:
            if future.exception() is None:
                sandbox, warm = future.result()
                sandbox.remove()
                if warm:
                    pool.run_over(self.pool_owner)  # its refill need not wait for a run

        self._future.add_done_callback(remove)


_starter_pool: ThreadPoolExecutor | None = None
_starter_lock = threading.Lock()


def _starter() -> ThreadPoolExecutor:
    """The threads that start ``Ahead`` sandboxes (made on first use; anew in a forked child, which has
    none of its parent's threads: RQ's work horse)."""
    global _starter_pool
    with _starter_lock:
        if _starter_pool is None:
            _starter_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-ahead")
        return _starter_pool


def _forget_starter() -> None:
    global _starter_pool, _starter_lock
    _starter_pool, _starter_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_starter)


def run(
    request: RunRequest,
    *,
    on_output: Callable[[str, bytes], None],
    control: Callable[[], Command | None],
    on_sample: Callable[[ResourceSample], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    pool_owner: str | None = None,
    remove_behind: bool = False,
    ahead: Ahead | None = None,
) -> RunResult:
    """Run ``request`` in a fresh locked-down container and return how it ended.

    Never raises for program behaviour; platform faults end as ``Outcome.ERROR`` with ``failure``
    set. The container is removed (or handed to the worker's remover) before this returns. All
    callbacks run on the calling thread.

    ``on_result`` is called with the result once the program has ended but before the container is
    removed, so a caller can record the verdict without waiting for the engine's removal; the removal
    happens before ``run`` returns, even if it raises; with ``remove_behind`` (an evaluation's run,
    whose container the reconciler's orphan sweep accounts for) in a worker that installed a
    remover, it is handed to it instead (``removal.remove``).

    With ``pool_owner``, an idle sandbox of that worker's warm pool with the request's profile is
    used when there is one (``pool.claim``); otherwise, or when the limits match no warm profile,
    the sandbox starts cold. ``ahead``: the sandbox the caller got for this profile (``Ahead``, from
    the same pool or cold), taken instead (one for another profile is discarded). Either way it runs
    this program only and is removed after it.
    """
    warm = False
    try:
        profile = profile_for(request)
        if ahead is not None and ahead.profile != profile:
            ahead.discard()
            ahead = None
        if ahead is not None:
            sandbox, warm = ahead.take()
        else:
            sandbox = pool.claim(pool_owner, profile, request.run_id) if pool_owner else None
            warm = sandbox is not None
            sandbox = sandbox or Sandbox.create(profile, run_id=request.run_id, attachable=attach_suits(profile))
    except (SandboxSetupError, RuntimeUnknown) as exc:
        if ahead is not None:
            ahead.discard()
        result = RunResult.failed(getattr(exc, "failure", Failure.ENGINE_FAULT), str(exc))
        if on_result is not None:
            on_result(result)
        return result
    try:
        result = execute(sandbox, request, on_output=on_output, control=control, on_sample=on_sample, attach=True)
        result.warm = warm
        if on_result is not None:
            on_result(result)
        return result
    finally:
        if warm:
            pool.run_over(ahead.pool_owner if ahead is not None else pool_owner)  # its refill waited for this run
        removal.remove(sandbox, behind=remove_behind)


@dataclass(frozen=True)
class Program:
    """One of several programs run one after another for one request (e.g. a sample under each test)."""

    code: bytes
    stdin: bytes = b""
    file_name: str = ""  # the code file's name in the sandbox; empty: the runtime's own (numbered)


def run_programs(
    request: RunRequest,
    programs: list[Program],
    *,
    on_output: Callable[[str, bytes], None],
    control: Callable[[], Command | None],
    on_sample: Callable[[ResourceSample], None] | None = None,
    on_program: Callable[[int], None] | None = None,
    pool_owner: str | None = None,
    reuse: Reuse | None = None,
    remove_behind: bool = False,
    ahead: Ahead | None = None,
) -> list[RunResult]:
    """Run each of ``programs`` in its own fresh process, one after another, in the request's sandbox.

    The programs share one sandbox (a warm one when the pool has it), each with the request's
    limits (its own wall-clock timeout; the output cap is shared: each program gets what the ones
    before it left). Before each program but the first, every process the previous one left
    behind is killed. A program that ended with the sandbox killed (its timeout, memory or output
    cap) leaves the next one a new sandbox. A cancel, a stop or a platform fault ends the sequence:
    the results list then holds the programs that ran, the last one saying why it stopped.
    ``on_program(i)`` is called before program ``i`` is delivered. The files the programs left in
    /output are collected once, after the last program (with its result).

    With ``reuse`` the sandbox is one its owner's worker kept for this group (a batch) after an
    earlier request of the group, when there is one; at the end, unless it was killed or the run
    was cut short, it is reset (``Sandbox.reset``: every process killed, every writable place
    emptied, verified) and parked for the group's next request instead of removed; a sandbox that
    does not verify clean is removed. ``remove_behind`` and ``ahead`` (never with ``reuse``: a group's
    kept sandbox is claimed here, under the run's name): as for ``run``.
    """
    results: list[RunResult] = []
    sandbox: Sandbox | None = None
    warm = False
    left = request.limits.output_cap_bytes
    if ahead is not None and reuse is not None:
        raise ValueError("a group's kept sandbox is claimed by the runner: no sandbox got ahead with reuse")
    if ahead is not None and ahead.profile != profile_for(request):
        ahead.discard()
        ahead = None
    try:
        for index, program in enumerate(programs):
            try:
                if sandbox is not None and sandbox.killed:
                    sandbox.remove()
                    sandbox = None
                fresh = sandbox is None
                if sandbox is None and ahead is not None:
                    taken, ahead = ahead, None
                    sandbox, warm = taken.take()
                    pool_owner = taken.pool_owner  # its refill waited for these programs (below)
                elif sandbox is None:
                    sandbox, warm = _sandbox_for(request, pool_owner if not results else None, reuse, first=not results)
                elif results:
                    sandbox.kill_programs()
            except (SandboxSetupError, RuntimeUnknown) as exc:
                results.append(RunResult.failed(getattr(exc, "failure", Failure.ENGINE_FAULT), str(exc)))
                return results
            if on_program is not None:
                on_program(index)
            one = replace(
                request,
                code=program.code,
                stdin=program.stdin,
                runtime=replace(request.runtime, file_name=program.file_name or _file_name(request.runtime, index)),
                limits=replace(request.limits, output_cap_bytes=max(0, left)),
                files=request.files if fresh else {},  # a sandbox keeps them for its later programs
                # /output is the sandbox's: what the programs left there is collected once, after the last.
                collect_artifacts=index == len(programs) - 1,
            )
            result = execute(sandbox, one, on_output=on_output, control=control, on_sample=on_sample)
            result.warm = warm
            left -= result.output_bytes
            results.append(result)
            if result.outcome in CUT_SHORT:
                return results
        return results
    finally:
        if ahead is not None:  # no program to run
            ahead.discard()
        owner = reuse.owner if reuse is not None else pool_owner
        if warm and owner:
            pool.run_over(owner)  # its refill waited for these programs to be over
        if sandbox is not None and not _parked(sandbox, reuse, results):
            removal.remove(sandbox, behind=remove_behind)


@dataclass(frozen=True)
class Reuse:
    """Keep the sandbox for the next request of ``group`` (a batch), in ``owner``'s (a worker's) pool.

    ``background``: reset it in a thread of this process (``pool.park_in_background``), so the caller
    records its result and takes its next request meanwhile; that request's claim waits for the reset.
    Only for a caller whose process outlives the request (a worker that does not fork per job): a
    process that exits at once would leave the sandbox neither parked nor removed."""

    owner: str
    group: str
    background: bool = False


CUT_SHORT = (Outcome.CANCELLED, Outcome.STOPPED, Outcome.ERROR)


def _parked(sandbox: Sandbox, reuse: Reuse | None, results: list[RunResult]) -> bool:
    """Reset the sandbox and park it for the group's next request; False when it must be removed."""
    if reuse is None or sandbox.killed or not results or results[-1].outcome in CUT_SHORT:
        return False

    def reset_and_park(sandbox: Sandbox) -> bool:
        # Handed over in this process: the reset starts the helper's serve exec (or uses the one it
        # has), and the next sample is a frame on it instead of a launcher's exec.
        problem = sandbox.reset(serve=reuse.background)
        if problem:
            log.warning("sandbox %s not reused: %s", sandbox.container_id[:12], problem)
            return False
        # Kept in this process (``pool.park_in_background``): not renamed, the next claim takes it as is.
        return reuse.background or pool.park(sandbox, reuse.owner)

    if reuse.background:
        key = pool.reuse_key(sandbox.profile, reuse.group)
        pool.park_in_background(sandbox, reuse.owner, key, reset_and_park)
        return True
    return reset_and_park(sandbox)


def _file_name(runtime, index: int) -> str:
    """Program ``index``'s code file: the launcher never overwrites a file, so each has its own. A
    compiled runtime's keeps its exact name in a directory of its own (javac wants ``Main.java``)."""
    if index == 0:
        return runtime.file_name
    return f"p{index}/{runtime.file_name}" if runtime.compiled else f"p{index}_{runtime.file_name}"


def _sandbox_for(
    request: RunRequest, pool_owner: str | None, reuse: Reuse | None = None, *, first: bool = True
) -> tuple[Sandbox, bool]:
    """The group's parked sandbox (``reuse``), a warm one from ``pool_owner``'s pool, else a cold one."""
    profile = profile_for(request)
    if reuse is not None:
        key = pool.reuse_key(profile, reuse.group)
        sandbox = pool.claim(reuse.owner, profile, request.run_id, key=key) if first else None
        if sandbox is None and first and reuse.background:
            # A warm sandbox, kept in this process from now on (a forking worker's parks by name and
            # label: only one created for the group may be parked for it).
            sandbox = pool.claim_to_keep(reuse.owner, profile, request.run_id)
        if sandbox is not None:
            return sandbox, True
        sandbox = pool.create_reusable(reuse.owner, profile, request.run_id, reuse.group, kept=reuse.background)
        return sandbox, False
    sandbox = pool.claim(pool_owner, profile, request.run_id) if pool_owner else None
    if sandbox is not None:
        return sandbox, True
    return Sandbox.create(profile, run_id=request.run_id), False
