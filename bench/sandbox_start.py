"""Median time to run a trivial Python program, side by side, under runc and under gVisor (runsc):

1. cold, through the runner (create + start a locked-down container, deliver, collect, remove);
2. a plain ``docker run --rm``-equivalent SDK call (no policy, output via the engine's logs);
3. delivery only, into a container started beforehand (what a warm pool would give);

how often the runner asks ``control()`` while a program runs (it aims at every 0.1 s), and what
gVisor costs (runsc / runc) for each.

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/sandbox_start.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from apps.sandboxing import engine  # noqa: E402
from apps.sandboxing.execution import execute  # noqa: E402
from apps.sandboxing.outcomes import Outcome, RunRequest  # noqa: E402
from apps.sandboxing.policy import Limits, runtime_for  # noqa: E402
from apps.sandboxing.runner import Sandbox, profile_for, run  # noqa: E402

CODE = b"print('hi')"


def request() -> RunRequest:
    return RunRequest(
        run_id=f"bench-{uuid.uuid4()}",
        runtime=runtime_for("python"),
        code=CODE,
        stdin=b"",
        limits=Limits.from_settings(timeout_s=10),
    )


def cold() -> float:
    start = time.perf_counter()
    result = run(request(), on_output=lambda s, d: None, control=lambda: None)
    elapsed = time.perf_counter() - start
    assert result.outcome is Outcome.EXITED and result.exit_code == 0, result
    return elapsed


def plain_docker_run() -> float:
    start = time.perf_counter()
    out = engine.client().containers.run(
        settings.SANDBOX_IMAGE, ["python3", "-c", CODE.decode()], remove=True, runtime=settings.SANDBOX_RUNTIME
    )
    elapsed = time.perf_counter() - start
    assert out == b"hi\n"
    return elapsed


def warm_delivery(sandbox: Sandbox) -> float:
    req = request()
    start = time.perf_counter()
    result = execute(sandbox, req, on_output=lambda s, d: None, control=lambda: None)
    elapsed = time.perf_counter() - start
    assert result.outcome is Outcome.EXITED and result.exit_code == 0, result
    return elapsed


def control_poll_gaps() -> list[float]:
    """Seconds between the runner's control polls while a program sleeps for 1.5 s."""
    calls: list[float] = []

    def control():
        calls.append(time.perf_counter())

    req = request()
    req = RunRequest(req.run_id, req.runtime, b"import time; time.sleep(1.5)", b"", req.limits)
    result = run(req, on_output=lambda s, d: None, control=control)
    assert result.outcome is Outcome.EXITED, result
    return [b - a for a, b in zip(calls, calls[1:], strict=False)]


LABELS = {
    "cold": "cold run, locked down, through the runner",
    "plain": "plain docker run --rm (SDK, no policy)",
    "warm": "delivery into a pre-started sandbox",
    "gaps": "control poll gap while a program runs",
}


def measure(runs: int) -> dict[str, list[float]]:
    """Every figure under the runtime ``settings.SANDBOX_RUNTIME`` names now."""
    cold(), plain_docker_run()  # warm the engine's caches
    figures = {"cold": [cold() for _ in range(runs)], "plain": [plain_docker_run() for _ in range(runs)], "warm": []}
    for _ in range(runs):
        req = request()
        sandbox = Sandbox.create(profile_for(req), run_id=req.run_id)
        try:
            figures["warm"].append(warm_delivery(sandbox))
        finally:
            sandbox.remove()
    figures["gaps"] = control_poll_gaps()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--runtimes", default="runc,runsc", help="engine runtimes to compare, comma-separated")
    args = parser.parse_args()
    results = {}
    for runtime in args.runtimes.split(","):
        settings.SANDBOX_RUNTIME = runtime
        results[runtime] = measure(args.runs)
    print(f"runs per figure: {args.runs}; program: {CODE.decode()}")
    for runtime, figures in results.items():
        print(f"-- {runtime}")
        for key, label in LABELS.items():
            times = figures[key]
            low = "max" if key == "gaps" else "min"
            extreme = max(times) if key == "gaps" else min(times)
            print(f"{label:45s} median {statistics.median(times) * 1000:7.1f} ms   {low} {extreme * 1000:7.1f} ms")
    if {"runc", "runsc"} <= set(results):
        print("-- what gVisor costs (median runsc / median runc)")
        for key in ("cold", "plain", "warm"):
            ratio = statistics.median(results["runsc"][key]) / statistics.median(results["runc"][key])
            print(f"{LABELS[key]:45s} {ratio:5.2f}x")


if __name__ == "__main__":
    main()
