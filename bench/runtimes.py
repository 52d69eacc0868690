"""Per runtime (every one whose image is built): a hello world cold through the runner (a fresh
locked-down sandbox each time), warm (delivered into a sandbox of the runtime's profile started
beforehand, as a warm pool keeps one per profile), the compile step's own time for a compiled
language, beside a raw ``docker run --rm`` of the same image doing the same (compile and run in
one shell, no policy), under runc and gVisor. Medians.

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/runtimes.py [--runs N] [--runtimes runc,runsc]
"""

from __future__ import annotations

import argparse
import base64
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

from apps.sandboxing import catalog, engine  # noqa: E402
from apps.sandboxing.execution import execute  # noqa: E402
from apps.sandboxing.image import current_image  # noqa: E402
from apps.sandboxing.outcomes import Outcome, RunRequest  # noqa: E402
from apps.sandboxing.policy import BUILD_DIR, Limits  # noqa: E402
from apps.sandboxing.runner import Sandbox, profile_for, run  # noqa: E402
from apps.sandboxing.tests.languages import HELLO, PROGRAMS  # noqa: E402

HELLO_PYTHON = f'print("{HELLO}")\n'
MEMORY_MB = 512


def code_of(name: str) -> str:
    return PROGRAMS[name]["hello"] if name in PROGRAMS else HELLO_PYTHON if name == "python" else f"echo {HELLO}\n"


def request(name: str) -> RunRequest:
    return RunRequest(
        run_id=f"bench-{uuid.uuid4()}",
        runtime=catalog.runtime(name),
        code=code_of(name).encode(),
        stdin=b"",
        limits=Limits.from_settings(timeout_s=60, memory_mb=MEMORY_MB),
    )


def checked(result) -> None:
    assert result.outcome is Outcome.EXITED and result.exit_code == 0, result


def cold(name: str) -> tuple[float, float | None]:
    start = time.perf_counter()
    result = run(request(name), on_output=lambda s, d: None, control=lambda: None)
    checked(result)
    return time.perf_counter() - start, None if result.compile_ms is None else result.compile_ms / 1000


def warm(name: str) -> float:
    req = request(name)
    sandbox = Sandbox.create(profile_for(req), run_id=req.run_id)
    try:
        start = time.perf_counter()
        checked(execute(sandbox, req, on_output=lambda s, d: None, control=lambda: None))
        return time.perf_counter() - start
    finally:
        sandbox.remove()


def raw_docker_run(name: str) -> float:
    """The same program in a plain container of the same image: written, compiled, run by one shell."""
    runtime = catalog.runtime(name)
    path = f"/tmp/{runtime.file_name}"
    steps = [runtime.compile_argv(path), runtime.argv(path)] if runtime.compiled else [runtime.argv(path)]
    encoded = base64.b64encode(code_of(name).encode()).decode()
    script = f"echo {encoded} | base64 -d > {path} && " + " && ".join(" ".join(step) for step in steps)
    client = engine.client()
    start = time.perf_counter()
    output = client.containers.run(
        runtime.image,
        ["bash", "-c", script],
        runtime=settings.SANDBOX_RUNTIME,
        tmpfs={BUILD_DIR: "exec,size=256m"},
        environment={**runtime.environment},
        mem_limit=f"{MEMORY_MB}m",
        remove=True,
    )
    elapsed = time.perf_counter() - start
    assert HELLO.encode() in output, output
    return elapsed


def raw_or_none(name: str) -> float | None:
    """The raw run's time, or None when the plain container fails (e.g. javac under gVisor with no limits set)."""
    try:
        return raw_docker_run(name)
    except Exception as exc:
        print(f"raw docker run of {name} failed: {str(exc)[-200:]}", file=sys.stderr)
        return None


def measure(name: str, runs: int) -> dict[str, float]:
    cold(name), raw_or_none(name)  # the engine's caches and the image's pages
    colds = [cold(name) for _ in range(runs)]
    raws = [t for t in (raw_or_none(name) for _ in range(runs)) if t is not None]
    figures = {
        "cold": statistics.median(c for c, _ in colds),
        "warm": statistics.median(warm(name) for _ in range(runs)),
    }
    if raws:
        figures["raw"] = statistics.median(raws)
    if colds[0][1] is not None:
        figures["compile"] = statistics.median(c for _, c in colds)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--runtimes", default="runc,runsc", help="engine runtimes to compare, comma-separated")
    parser.add_argument("--only", default="", help="runtime names, comma-separated (default: every built one)")
    args = parser.parse_args()
    names = [n for n in (args.only.split(",") if args.only else catalog.definitions()) if n]
    built = [n for n in names if current_image(catalog.definition(n).image) is not None]
    print(f"hello world, medians of {args.runs}; skipped (not built): {', '.join(sorted(set(names) - set(built)))}")
    print(f"{'engine':6s} {'runtime':18s} {'cold':>9s} {'warm':>9s} {'compile':>9s} {'raw run':>9s} {'cold/raw':>8s}")
    for engine_runtime in args.runtimes.split(","):
        settings.SANDBOX_RUNTIME = engine_runtime
        for name in built:
            f = measure(name, args.runs)
            compile_s = f"{f['compile'] * 1000:7.0f}ms" if "compile" in f else "        -"
            raw_s = f"{f['raw'] * 1000:7.0f}ms {f['cold'] / f['raw']:7.2f}x" if "raw" in f else "   failed        -"
            cold_warm = f"{f['cold'] * 1000:7.0f}ms {f['warm'] * 1000:7.0f}ms"
            print(f"{engine_runtime:6s} {name:18s} {cold_warm} {compile_s} {raw_s}")


if __name__ == "__main__":
    main()
