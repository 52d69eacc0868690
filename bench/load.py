"""Load and backpressure: nothing accepted is lost or run twice.

1. Load: N evaluations (default 1 000) submitted through the API by C concurrent clients (default 20,
   threads with requests, each submission with its own Idempotency-Key, retried on 429/connection
   errors with the same key). Reports accepted, completed, lost (accepted but never terminal: must
   be 0), duplicates (a submission accepted as two rows, a run claimed twice, or output stored twice:
   must be 0), p50/p95 queue wait (started_at - created_at) and throughput.
2. Backpressure: the stack restarted with a small QUEUE_CAPACITY; a burst from the same clients gets
   429 with Retry-After once the queue is full, and every submission that was accepted completes.

Runs a private stack (tests/stack.py: Daphne, workers and the reconciler on its own port, development database).
Usage: .venv/bin/python bench/load.py [--count 1000] [--clients 20] [--workers 2] [--capacity 25]
"""

from __future__ import annotations

import argparse
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

TERMINAL = {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}


def _lift_quota(username: str, count: int) -> None:
    from django.contrib.auth import get_user_model

    from apps.accounts.models import Quota

    user = get_user_model().objects.get(username=username)
    Quota.objects.update_or_create(user=user, defaults={"submissions_per_minute": count * 10, "max_active": count * 2})


class Client:
    def __init__(self, base: str, token: str):
        self.base = base
        self.local = threading.local()
        self.token = token
        self.lock = threading.Lock()
        self.throttled = 0
        self.retry_after_missing = 0
        self.server_errors = 0

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["Authorization"] = f"Token {self.token}"
        return self.local.session

    def submit(self, n: int, *, give_up_on_429: bool = False) -> tuple[str | None, int]:
        """Returns (evaluation id or None, number of 429s seen)."""
        key = f"load-{uuid.uuid4()}"
        body = {"code": f"print('evaluation {n}')", "priority": "normal", "metadata": {"n": n}}
        seen_429 = 0
        for _ in range(600):
            try:
                r = self.session().post(
                    f"{self.base}/api/v1/evaluations/", json=body, headers={"Idempotency-Key": key}, timeout=30
                )
            except requests.RequestException:
                time.sleep(0.5)
                continue  # same key: a retry can never create a second evaluation
            if r.status_code in (200, 201):
                return r.json()["id"], seen_429
            if r.status_code == 429:
                seen_429 += 1
                with self.lock:
                    self.throttled += 1
                    if "Retry-After" not in r.headers:
                        self.retry_after_missing += 1
                if give_up_on_429:
                    return None, seen_429
                time.sleep(min(float(r.headers.get("Retry-After", 1)), 2.0))
                continue
            if r.status_code >= 500:
                # e.g. the (shared) PostgreSQL out of connection slots: nothing was accepted; the same
                # Idempotency-Key makes the retry safe either way.
                with self.lock:
                    self.server_errors += 1
                time.sleep(0.5)
                continue
            raise RuntimeError(f"unexpected {r.status_code}: {r.text[:300]}")
        return None, seen_429


def wait_all(ids: list[str], timeout_s: float) -> dict:
    from django.db import close_old_connections

    from apps.evaluations.models import Evaluation

    deadline = time.monotonic() + timeout_s
    while True:
        close_old_connections()
        rows = {str(e.pk): e for e in Evaluation.objects.filter(pk__in=ids)}
        done = sum(1 for e in rows.values() if e.status in TERMINAL)
        if done == len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


def audit(ids: list[str], rows: dict, expected_code: dict[str, str] | None = None) -> dict:
    from django.db.models import Count

    from apps.evaluations.models import OutputChunk

    per_eval = dict(
        OutputChunk.objects.filter(evaluation_id__in=ids)
        .values_list("evaluation_id")
        .annotate(n=Count("id"))
        .values_list("evaluation_id", "n")
    )
    outputs: dict[str, bytes] = {}
    for eid, data in (
        OutputChunk.objects.filter(evaluation_id__in=ids)
        .order_by("evaluation_id", "seq")
        .values_list("evaluation_id", "data")
    ):
        outputs[str(eid)] = outputs.get(str(eid), b"") + bytes(data)
    lost = [i for i in ids if i not in rows or rows[i].status not in TERMINAL]
    dup_rows = len(ids) - len(set(ids))
    twice_claimed = [i for i, e in rows.items() if e.attempts > 1]
    wrong_output = [i for i, e in rows.items() if outputs.get(i, b"") != f"evaluation {e.metadata.get('n')}\n".encode()]
    waits = sorted(
        (e.started_at - e.created_at).total_seconds() for e in rows.values() if e.started_at and e.created_at
    )
    finished = [e.finished_at for e in rows.values() if e.finished_at]
    created = [e.created_at for e in rows.values()]
    span = (max(finished) - min(created)).total_seconds() if finished else float("nan")
    statuses: dict[str, int] = {}
    for e in rows.values():
        statuses[e.status] = statuses.get(e.status, 0) + 1
    return {
        "accepted": len(set(ids)),
        "completed": sum(1 for e in rows.values() if e.status in TERMINAL),
        "statuses": statuses,
        "lost": len(lost),
        # A submission accepted twice, a run claimed twice, or a line stored twice (a line may well
        # arrive as several chunks: seq 1..N is unique by constraint, so count the line itself).
        "duplicates": dup_rows
        + len(twice_claimed)
        + sum(
            1 for i, e in rows.items() if outputs.get(i, b"").count(f"evaluation {e.metadata.get('n')}\n".encode()) > 1
        ),
        "multi_chunk_outputs": sum(1 for n in per_eval.values() if n > 1),
        "wrong_output": len(wrong_output),
        "p50_wait_s": statistics.median(waits) if waits else float("nan"),
        "p95_wait_s": waits[int(0.95 * (len(waits) - 1))] if waits else float("nan"),
        "span_s": span,
        "throughput_per_s": len(finished) / span if finished and span > 0 else float("nan"),
    }


def load_phase(base: str, token: str, count: int, clients: int) -> dict:
    client = Client(base, token)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client.submit, range(count)))
    submit_s = time.perf_counter() - started
    ids = [r[0] for r in results if r[0]]
    rows = wait_all(ids, timeout_s=max(600, count * 2))
    report = audit(ids, rows)
    report.update(
        submitted=count, submit_s=round(submit_s, 1), throttled_429=client.throttled, retried_5xx=client.server_errors
    )
    return report


def backpressure_phase(base: str, token: str, burst: int, clients: int, capacity: int) -> dict:
    client = Client(base, token)
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda n: client.submit(n, give_up_on_429=True), range(burst)))
    ids = [r[0] for r in results if r[0]]
    rows = wait_all(ids, timeout_s=600)
    report = audit(ids, rows)
    report.update(
        burst=burst,
        capacity=capacity,
        rejected_429=sum(1 for r in results if r[0] is None),
        retry_after_missing=client.retry_after_missing,
    )
    return report


def _stack(args, **settings: str):
    """Daphne, the workers and the reconciler (python -m crucible.cron, as in the Procfile): jobs that
    failed before their claim (e.g. the shared PostgreSQL out of connection slots) are enqueued again."""
    return development_stack(port=args.port, workers=args.workers, cron=True, RECONCILE_INTERVAL_S="5", **settings)


def fmt(report: dict) -> str:
    return ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in report.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=25, help="QUEUE_CAPACITY for the backpressure phase")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()

    django_setup()
    token = api_token("loadbench")
    _lift_quota("loadbench", args.count)

    with _stack(args, QUEUE_CAPACITY=str(args.count * 2)) as stack:
        load = load_phase(stack.url, token, args.count, args.clients)
    print(f"load: {args.count} submissions, {args.clients} clients, {args.workers} workers: {fmt(load)}")

    with _stack(args, QUEUE_CAPACITY=str(args.capacity)) as stack:
        bp = backpressure_phase(stack.url, token, args.burst, args.clients, args.capacity)
    print(f"backpressure: {fmt(bp)}")

    ok = (
        load["lost"] == 0
        and load["duplicates"] == 0
        and load["wrong_output"] == 0
        and bp["lost"] == 0
        and bp["duplicates"] == 0
        and bp["rejected_429"] > 0
        and bp["statuses"].get("succeeded", 0) == bp["accepted"]
    )
    print("RESULT:", "OK" if ok else "FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
