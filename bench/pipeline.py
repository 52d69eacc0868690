"""End-to-end cost of Crucible against a plain docker-SDK run of the same image and code.

Measured side by side in one run on one machine:
1. latency: median time from POST /api/v1/evaluations/ to a terminal status, for a trivial program,
   against the median of a plain `containers.run(image, python3 -c ..., remove=True)`;
2. throughput: 100 trivial evaluations through the API with the default two workers, against the
   same 100 plain runs in a sequential loop;
3. sustained throughput against the raw baseline of issue 12: the raw Docker SDK creating the same
   locked-down containers (``policy.container_config``, same engine runtime), starting them,
   running the program in them by exec as the sandbox user and removing them, from as many threads
   as there are workers; Crucible's workers fork a work horse per job (``WORKER_FORK=true``) or run
   jobs in their own process (``false``), removing each finished sandbox behind the run in a thread
   (``SANDBOX_REMOVE_BEHIND`` > 0) or before taking the next job (0). Sustained rate: completions
   per second between the first and the last completion of the batch (the submission of the batch is not in it);
4. issue 12's latency targets (``--only-latency``): a trivial evaluation's POST to terminal with the
   warm pool off against the raw SDK's cold run of the same locked-down container (create, start,
   exec), and with the pool on against the raw warm delivery (one exec into a container started
   beforehand);
each under runc and under gVisor (runsc), with what gVisor costs (runsc / runc).

Usage: .venv/bin/python bench/pipeline.py [--runs 20] [--batch 100] [--workers 2] [--runtimes runc,runsc]
                                          [--fork true,false] [--remove-behind 0,2]
                                          [--only-sustained | --only-latency]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.stack import api_token, development_stack, django_setup  # noqa: E402

CODE = "print(1)"
TERMINAL = {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}


def plain_run(client, image: str, runtime: str) -> float:
    started = time.perf_counter()
    client.containers.run(image, ["python3", "-c", CODE], remove=True, network_mode="none", runtime=runtime)
    return time.perf_counter() - started


def raw_locked_down_run(client, profile, runtime_label: str) -> float:
    """One trivial run with the raw SDK, in the sandbox's own container config; returns when it completed.

    The same container as Crucible's (``policy.container_config``: every limit, seccomp, masked
    paths, the engine runtime), labelled for this benchmark only so no reconciler takes it for a
    run of its own; the program is run by exec as the sandbox user, as the runner delivers it.
    """
    container = raw_container(profile, runtime_label)
    try:
        container.start()
        run_trivial(container)
    finally:
        client.api.remove_container(container.id, force=True)
    return time.monotonic()


def raw_container(profile, runtime_label: str):
    """A created (not started) container in Crucible's own config, labelled for this benchmark only."""
    from apps.sandboxing.policy import LABEL_INSTANCE, container_config
    from apps.sandboxing.sandbox import _engine_create

    run_id = f"bench-raw-{uuid.uuid4().hex[:12]}"
    config = container_config(profile, name=run_id, run_id=run_id)
    config["labels"] = {**config["labels"], LABEL_INSTANCE: runtime_label}
    return _engine_create(config)


def run_trivial(container) -> None:
    """The trivial program by exec as the sandbox user, as the runner's exec path delivers it."""
    from apps.sandboxing.policy import SANDBOX_USER

    exit_code, output = container.exec_run(["python3", "-c", CODE], user=SANDBOX_USER)
    assert (exit_code, output) == (0, b"1\n"), (exit_code, output)


def raw_cold_run(client, profile, runtime_label: str) -> float:
    """Seconds from nothing to a trivial program's output with the raw SDK: create and start the same
    locked-down container as Crucible's, exec the program as the sandbox user; the removal is after
    the clock stops (Crucible's terminal status does not wait for its removal either)."""
    started = time.perf_counter()
    container = raw_container(profile, runtime_label)
    try:
        container.start()
        run_trivial(container)
        elapsed = time.perf_counter() - started
    finally:
        client.api.remove_container(container.id, force=True)
    return elapsed


def raw_warm_delivery(client, profile, runtime_label: str) -> float:
    """Seconds to run a trivial program in a locked-down container started beforehand (the raw warm
    delivery: one exec as the sandbox user), in its own container started off the clock."""
    container = raw_container(profile, runtime_label)
    try:
        container.start()
        time.sleep(0.2)
        started = time.perf_counter()
        run_trivial(container)
        return time.perf_counter() - started
    finally:
        client.api.remove_container(container.id, force=True)


def latency(runtime: str, args, session, client, image: str) -> dict[str, float]:
    """Issue 12's latency targets, side by side: a trivial evaluation's POST to its terminal status (its
    WebSocket's ``end`` message) with the pool off against the raw SDK's cold run, and with the pool on
    against the raw warm delivery. Raw and Crucible runs alternate, pair by pair, on the same idle
    stack (each run 1.5 s after the previous one, so the pool refilled), so that what the machine
    does in between (the hour's load, the engine's own state) moves both sides of a pair alike."""
    from apps.monitoring.models import RunTiming
    from apps.sandboxing.policy import Limits, Profile

    limits = Limits.from_settings()
    profile = Profile(image=image, limits=limits, engine_runtime=runtime)
    label = f"bench-raw-{threading.get_ident()}"
    figures = {}
    print(f"-- {runtime}: latency, median of {args.runs} pairs (a raw run, then a Crucible run)")
    for pool_size, raw_name in ((0, "raw SDK cold run"), (1, "raw SDK warm delivery")):
        raw_run = raw_cold_run if pool_size == 0 else raw_warm_delivery
        env = {"SANDBOX_RUNTIME": runtime, "SANDBOX_POOL_SIZE": str(pool_size)}
        with development_stack(workers=args.workers, **env) as stack:
            time.sleep(1.5)
            raw_run(client, profile, label)  # warm up both
            api_run_watched(session, stack.url)
            raws, times, ids = [], [], []
            for _ in range(args.runs):
                time.sleep(1.5)
                raws.append(raw_run(client, profile, label))
                time.sleep(0.5)
                elapsed, evaluation_id = api_run_watched(session, stack.url)
                times.append(elapsed)
                ids.append(evaluation_id)
            warm = RunTiming.objects.filter(evaluation_id__in=ids, warm=True).count()
        raw, median = statistics.median(raws), statistics.median(times)
        figures[f"raw_{pool_size}"], figures[f"pool_{pool_size}"] = raw, median
        if pool_size == 0:
            pairs = statistics.median(t / r for t, r in zip(times, raws, strict=True))
            verdict = f"{median / raw:.2f}x the raw cold run (target <= 1.10x; the pairs' ratios' median {pairs:.2f}x)"
        else:
            pairs = statistics.median(t - r for t, r in zip(times, raws, strict=True))
            verdict = (
                f"raw warm delivery + {(median - raw) * 1000:.0f} ms "
                f"(target <= + 30 ms; median of the pairs' differences + {pairs * 1000:.0f} ms)"
            )
        print(f"{raw_name} (locked-down): {raw * 1000:4.0f} ms")
        print(
            f"Crucible, SANDBOX_POOL_SIZE={pool_size}, POST to terminal: {median * 1000:4.0f} ms "
            f"(p90 {statistics.quantiles(times, n=10)[-1] * 1000:.0f} ms; {warm}/{len(ids)} from the pool) = {verdict}"
        )
    return figures


def sustained_rate(completions: list[float]) -> float:
    """Completions per second between the first and the last completion."""
    completions = sorted(completions)
    return (len(completions) - 1) / (completions[-1] - completions[0])


def raw_throughput(client, image: str, runtime: str, batch: int, threads: int) -> tuple[float, float]:
    """Wall time and sustained rate of ``batch`` raw locked-down runs from ``threads`` threads."""
    from apps.sandboxing.policy import Limits, Profile

    limits = Limits.from_settings(timeout_s=5, memory_mb=128, cpus=1)
    profile = Profile(image=image, limits=limits, engine_runtime=runtime)
    label = f"bench-raw-{threading.get_ident()}"
    raw_locked_down_run(client, profile, label)  # warm-up
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        completions = list(pool.map(lambda _: raw_locked_down_run(client, profile, label), range(batch)))
    return time.monotonic() - started, sustained_rate(completions)


def crucible_throughput(session, base: str, batch: int) -> tuple[float, float, int]:
    """Wall time (first POST to the last terminal status seen), sustained rate (from the rows' finished_at)
    and how many succeeded."""
    from apps.evaluations.models import Evaluation

    started = time.perf_counter()
    ids = []
    for _ in range(batch):
        response = session.post(f"{base}/api/v1/evaluations/", json={"code": CODE, "priority": "low"}, timeout=10)
        response.raise_for_status()
        ids.append(response.json()["id"])
    # Read from the database twice a second: polling the API as fast as the latency part does would
    # take CPU from the workers, and the raw loop has no such cost.
    rows = Evaluation.objects.filter(pk__in=ids)
    while rows.filter(status__in=TERMINAL).count() < batch:
        time.sleep(0.5)
    wall = time.perf_counter() - started
    finished = [f.timestamp() for f in rows.values_list("finished_at", flat=True)]
    return wall, sustained_rate(finished), rows.filter(status="succeeded").count()


def sustained(runtime: str, args, session, client, image: str) -> dict[str, float]:
    """Raw SDK from ``workers`` threads against Crucible with ``workers`` workers, forking or not."""
    wall, rate = raw_throughput(client, image, runtime, args.batch, args.workers)
    figures = {"raw_rate": rate}
    print(f"-- {runtime}: sustained throughput, {args.batch} trivial runs, {args.workers} at a time")
    print(f"raw docker SDK, locked-down containers, {args.workers} threads: {wall:5.1f} s, sustained {rate:5.2f}/s")
    for fork in args.fork.split(","):
        for behind in args.remove_behind.split(","):
            if fork == "true" and behind != "0":
                continue  # a forking worker has no remover
            env = {"SANDBOX_RUNTIME": runtime, "WORKER_FORK": fork, "SANDBOX_REMOVE_BEHIND": behind}
            with development_stack(workers=args.workers, **env) as stack:
                api_run(session, stack.url)  # warm up
                wall, rate, succeeded = crucible_throughput(session, stack.url, args.batch)
            figures[f"fork_{fork}_behind_{behind}"] = rate
            print(
                f"Crucible, {args.workers} workers, WORKER_FORK={fork:<5} SANDBOX_REMOVE_BEHIND={behind}: "
                f"{wall:5.1f} s, sustained {rate:5.2f}/s = {rate / figures['raw_rate'] * 100:.0f}% of raw; "
                f"succeeded {succeeded}/{args.batch}"
            )
    return figures


def wait_terminal(session, base, evaluation_id, poll=0.01) -> dict:
    while True:
        body = session.get(f"{base}/api/v1/evaluations/{evaluation_id}/", timeout=10).json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(poll)


def api_run(session, base) -> float:
    started = time.perf_counter()
    response = session.post(f"{base}/api/v1/evaluations/", json={"code": CODE}, timeout=10)
    response.raise_for_status()
    body = wait_terminal(session, base, response.json()["id"])
    elapsed = time.perf_counter() - started
    assert body["status"] == "succeeded", body
    return elapsed


def api_run_watched(session, base) -> tuple[float, str]:
    """POST a trivial evaluation and watch it on its WebSocket (as the CLI's ``--follow`` and the page
    do) until its ``end`` message: seconds from the POST to that message, and its id. Unlike polling
    the API every 10 ms, watching costs the server nothing while the run runs."""
    from websockets.sync.client import connect

    token = session.headers["Authorization"]
    started = time.perf_counter()
    response = session.post(f"{base}/api/v1/evaluations/", json={"code": CODE}, timeout=10)
    response.raise_for_status()
    evaluation_id = response.json()["id"]
    ws_url = base.replace("http", "ws", 1) + f"/ws/evaluations/{evaluation_id}/?after=0"
    with connect(ws_url, additional_headers={"Authorization": token}, origin=base) as socket:
        for raw in socket:
            message = json.loads(raw)
            if message["type"] == "end":
                assert message["status"] == "succeeded", message
                return time.perf_counter() - started, evaluation_id
    raise AssertionError(f"the WebSocket of {evaluation_id} closed before its end")


def _lift_quota(username: str, batch: int) -> None:
    """The benchmark user may submit a whole batch at once (an operator would set this in the admin)."""
    from django.contrib.auth import get_user_model

    from apps.accounts.models import Quota

    user = get_user_model().objects.get(username=username)
    Quota.objects.update_or_create(user=user, defaults={"submissions_per_minute": batch * 10, "max_active": batch * 2})


def measure(runtime: str, args, session, client, image: str) -> dict[str, float]:
    """Latency and throughput, Crucible and plain, with sandboxes under ``runtime``."""
    with development_stack(workers=args.workers, SANDBOX_RUNTIME=runtime) as stack:
        base = stack.url
        api_run(session, base)  # warm up both paths
        plain_run(client, image, runtime)
        plain = [plain_run(client, image, runtime) for _ in range(args.runs)]
        through_api = [api_run(session, base) for _ in range(args.runs)]

        started = time.perf_counter()
        for _ in range(args.batch):
            plain_run(client, image, runtime)
        plain_batch = time.perf_counter() - started

        started = time.perf_counter()
        ids = []
        for _ in range(args.batch):
            response = session.post(f"{base}/api/v1/evaluations/", json={"code": CODE, "priority": "low"}, timeout=10)
            response.raise_for_status()
            ids.append(response.json()["id"])
        statuses = [wait_terminal(session, base, i, poll=0.05)["status"] for i in ids]
        api_batch = time.perf_counter() - started
    figures = {
        "plain": statistics.median(plain),
        "api": statistics.median(through_api),
        "plain_batch": plain_batch,
        "api_batch": api_batch,
    }
    p_med, a_med = figures["plain"], figures["api"]
    print(f"-- {runtime}")
    print(
        f"latency, median of {args.runs}: plain docker SDK {p_med * 1000:.0f} ms, "
        f"Crucible API submit->terminal {a_med * 1000:.0f} ms, ratio {a_med / p_med:.2f}x"
    )
    print(
        f"throughput, {args.batch} trivial runs: plain sequential loop {plain_batch:.1f} s "
        f"({args.batch / plain_batch:.1f}/s), Crucible with {args.workers} workers {api_batch:.1f} s "
        f"({args.batch / api_batch:.1f}/s), ratio {api_batch / plain_batch:.2f}x; "
        f"succeeded {statuses.count('succeeded')}/{args.batch}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runtimes", default="runc,runsc", help="engine runtimes to compare, comma-separated")
    parser.add_argument("--fork", default="true,false", help="WORKER_FORK values for the sustained part")
    parser.add_argument(
        "--remove-behind", default="2", help="SANDBOX_REMOVE_BEHIND values for the sustained part (e.g. 0,2)"
    )
    parser.add_argument("--only-sustained", action="store_true", help="skip the latency and sequential parts")
    parser.add_argument(
        "--only-latency", action="store_true", help="only issue 12's latency targets (pool off and on, against raw)"
    )
    args = parser.parse_args()

    django_setup()
    from django.conf import settings

    from apps.sandboxing import engine

    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token('bench')}"
    _lift_quota("bench", args.batch)
    client = engine.client()
    runtimes = args.runtimes.split(",")
    if args.only_latency:
        for runtime in runtimes:
            latency(runtime, args, session, client, settings.SANDBOX_IMAGE)
        return
    rates = {runtime: sustained(runtime, args, session, client, settings.SANDBOX_IMAGE) for runtime in runtimes}
    if args.only_sustained:
        return
    results = {runtime: measure(runtime, args, session, client, settings.SANDBOX_IMAGE) for runtime in runtimes}
    if {"runc", "runsc"} <= set(results):
        gvisor, runc = results["runsc"], results["runc"]
        print("-- what gVisor costs (runsc / runc)")
        print(f"trivial evaluation through the API, median: {gvisor['api'] / runc['api']:.2f}x")
        print(f"plain docker SDK run, median:               {gvisor['plain'] / runc['plain']:.2f}x")
        print(f"{args.batch} evaluations through the API:            {gvisor['api_batch'] / runc['api_batch']:.2f}x")
        raw_cost = rates["runc"]["raw_rate"] / rates["runsc"]["raw_rate"]
        print(f"raw SDK sustained rate, locked-down:        {raw_cost:.2f}x")


if __name__ == "__main__":
    main()
