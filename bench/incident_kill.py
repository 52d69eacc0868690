"""Kill delay of a stop, with and without keeping the evidence, side by side, under each runtime.

For each round a fresh sandbox runs a program that writes a file to /output and then spins (a CPU
loop, the worst case for a pause) or, with ``--program bomb``, forks until its pids limit is full (a
fork bomb; stopped once it holds every process slot, as the default "fork-bomb" rule stops one). The
host then stops it one of two ways:
- plain: ``Sandbox.kill()`` (SIGKILL to the container), what a stop did before incidents;
- evidence: ``evidence.preserve()`` (freeze, process view, clear, collect /output, kill); "how"
  counts how the program was frozen (the engine's pause, or SIGSTOP to every process inside).
Figures: "halt" is from the stop to the moment the program can make no more progress (the kill's
return for plain; the pause's return for evidence), "total" until the container is killed (the
evidence step included). The container's removal is not counted (it is the same for both).

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/incident_kill.py [--rounds 10] [--runtime runc runsc]
       [--program spin|bomb]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from apps.sandboxing import evidence  # noqa: E402
from apps.sandboxing.policy import Limits, Profile, runtime_for  # noqa: E402
from apps.sandboxing.sandbox import Sandbox  # noqa: E402

WRITE = "import os\nopen('/output/kept.txt','w').write('x'*4096)\n"
PROGRAMS = {
    "spin": ["python3", "-c", WRITE + "while True: pass\n"],
    "bomb": ["python3", "-c", WRITE + "while True:\n    try: os.fork()\n    except OSError: pass\n"],
}


def one(engine_runtime: str, keep: bool, program: str) -> tuple[float, float, bool, str]:
    """(halt ms, total ms, the file was collected, how it was frozen) of one stop."""
    limits = Limits.from_settings(timeout_s=30, memory_mb=128 if program == "spin" else 256, cpus=1)
    sandbox = Sandbox.create(
        Profile(image=runtime_for("python").image, limits=limits, engine_runtime=engine_runtime),
        run_id=f"bench-{uuid.uuid4().hex[:12]}",
    )
    try:
        sandbox.open_exec(PROGRAMS[program], workdir="/tmp", environment={})
        time.sleep(0.5 if program == "spin" else 1.0)
        started = time.monotonic()
        if not keep:
            sandbox.kill()
            halt = total = (time.monotonic() - started) * 1000
            return halt, total, False, ""
        kept, artifacts, _truncated, _skipped = evidence.preserve(sandbox, collect=True, started=started)
        collected = any(a.name == "kept.txt" for a in artifacts)
        return kept.freeze_ms or kept.total_ms, kept.total_ms, collected, kept.frozen_by or "none"
    finally:
        sandbox.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runtime", nargs="+", default=["runc", "runsc"])
    parser.add_argument("--program", choices=sorted(PROGRAMS), default="spin")
    args = parser.parse_args()
    print(f"program={args.program} rounds={args.rounds} evidence deadline={settings.SANDBOX_EVIDENCE_DEADLINE_S}s")
    print(
        f"{'runtime':8} {'stop':9} {'halt median':>12} {'halt max':>9} {'total median':>13} {'total max':>10} kept how"
    )
    for engine_runtime in args.runtime:
        for keep in (False, True):
            runs = [one(engine_runtime, keep, args.program) for _ in range(args.rounds)]
            halts, totals = [r[0] for r in runs], [r[1] for r in runs]
            print(
                f"{engine_runtime:8} {'evidence' if keep else 'plain':9} {statistics.median(halts):10.1f}ms"
                f" {max(halts):7.1f}ms {statistics.median(totals):11.1f}ms {max(totals):8.1f}ms"
                f" {sum(r[2] for r in runs)}/{len(runs)} {dict(Counter(r[3] for r in runs if r[3]))}"
            )


if __name__ == "__main__":
    main()
