"""End-to-end cost of Crucible against a plain docker-SDK run of the same image and code.

Measured side by side in one run on one machine:
1. latency: median time from POST /api/v1/evaluations/ to a terminal status, for a trivial program,
   against the median of a plain `containers.run(image, python3 -c ..., remove=True)`;
2. throughput: 100 trivial evaluations through the API with the default two workers, against the
   same 100 plain runs in a sequential loop;
each under runc and under gVisor (runsc), with what gVisor costs (runsc / runc).

Usage: .venv/bin/python bench/pipeline.py [--runs 20] [--batch 100] [--workers 2] [--runtimes runc,runsc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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
    args = parser.parse_args()

    django_setup()
    from django.conf import settings

    from apps.sandboxing import engine

    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token('bench')}"
    _lift_quota("bench", args.batch)
    results = {
        runtime: measure(runtime, args, session, engine.client(), settings.SANDBOX_IMAGE)
        for runtime in args.runtimes.split(",")
    }
    if {"runc", "runsc"} <= set(results):
        gvisor, runc = results["runsc"], results["runc"]
        print("-- what gVisor costs (runsc / runc)")
        print(f"trivial evaluation through the API, median: {gvisor['api'] / runc['api']:.2f}x")
        print(f"plain docker SDK run, median:               {gvisor['plain'] / runc['plain']:.2f}x")
        print(f"{args.batch} evaluations through the API:            {gvisor['api_batch'] / runc['api_batch']:.2f}x")


if __name__ == "__main__":
    main()
