"""The runner: one program, one fresh locked-down sandbox, a typed result.

``run`` creates a sandbox for the request's profile (``Sandbox.create``), delivers and supervises
the program in it (``execution.execute``) and removes it (``Sandbox.remove``,
``force``: SIGKILL to everything in it), always. It knows nothing about HTTP, users or the
database; callers read the ``RunResult``'s ``Outcome`` and ``Failure``, never its ``error`` text.
"""

from __future__ import annotations

from collections.abc import Callable

from apps.sandboxing import pool
from apps.sandboxing.engine_runtime import RuntimeUnknown
from apps.sandboxing.execution import execute
from apps.sandboxing.outcomes import Command, Failure, ResourceSample, RunRequest, RunResult
from apps.sandboxing.policy import LABEL_INSTANCE, LABEL_RUN, Profile
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError

__all__ = [
    "LABEL_INSTANCE",
    "LABEL_RUN",
    "ResourceSample",
    "RunRequest",
    "RunResult",
    "Sandbox",
    "SandboxSetupError",
    "profile_for",
    "run",
]


def profile_for(request: RunRequest) -> Profile:
    """The sandbox a request runs in: its runtime's image, its limits, the configured engine runtime."""
    return Profile(image=request.runtime.image, limits=request.limits)


def run(
    request: RunRequest,
    *,
    on_output: Callable[[str, bytes], None],
    control: Callable[[], Command | None],
    on_sample: Callable[[ResourceSample], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    pool_owner: str | None = None,
) -> RunResult:
    """Run ``request`` in a fresh locked-down container and return how it ended.

    Never raises for program behaviour; platform faults end as ``Outcome.ERROR`` with ``failure``
    set. The container is removed before this returns. All callbacks run on the calling thread.

    ``on_result`` is called with the result once the program has ended (the container is already
    killed) but before the container is removed, so a caller can record the verdict without waiting
    for the engine's removal; the removal still happens before ``run`` returns, even if it raises.

    With ``pool_owner``, an idle sandbox of that worker's warm pool with the request's profile is
    used when there is one (``pool.claim``); otherwise, or when the limits match no warm profile,
    the sandbox starts cold. Either way it runs this program only and is removed after it.
    """
    warm = False
    try:
        profile = profile_for(request)
        sandbox = pool.claim(pool_owner, profile, request.run_id) if pool_owner else None
        warm = sandbox is not None
        sandbox = sandbox or Sandbox.create(profile, run_id=request.run_id)
    except (SandboxSetupError, RuntimeUnknown) as exc:
        result = RunResult.failed(getattr(exc, "failure", Failure.ENGINE_FAULT), str(exc))
        if on_result is not None:
            on_result(result)
        return result
    try:
        result = execute(sandbox, request, on_output=on_output, control=control, on_sample=on_sample)
        result.warm = warm
        if on_result is not None:
            on_result(result)
        return result
    finally:
        sandbox.remove()
