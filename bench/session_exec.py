"""Exec round trip of a session through the API, beside a raw ``docker exec`` of the same command.

For each runtime in ``--runtimes``, a development stack (Daphne + one session host, no worker) is
started with ``SANDBOX_RUNTIME`` set and one session is opened. Then, alternating so that both see
the same machine, ``--n`` times each:

* **API**: ``POST /api/v1/sandboxes/{id}/exec/`` with ``{"cmd": CMD}`` over a kept-alive HTTP
  connection, as a client (the Inspect provider) does: authentication, the request to the session
  host over Redis, the agent in the sandbox, the transcript's two writes, the answer.
* **docker exec**: the docker SDK's ``exec_create`` + ``exec_start`` + ``exec_inspect`` (for the exit
  code) of the same command in the same container, as the sandbox user: what any platform that
  runs each command with ``docker exec`` pays at least.

It prints p50, p95 and p99 of each and the overhead of the API over ``docker exec`` (p50 and p95;
a negative figure means the API is faster)::

    CRUCIBLE_ENV=development .venv/bin/python bench/session_exec.py [--n 200] [--runtimes runc,runsc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PERCENTILES = (50, 95, 99)


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(url: str, token: str, n: int, cmd: list[str]) -> dict[str, list[float]]:
    import requests

    from apps.sandboxing import engine
    from apps.sandboxing.policy import SANDBOX_USER
    from apps.sessions.models import Session

    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    created = http.post(f"{url}/api/v1/sandboxes/", json={}, timeout=120).json()
    if created.get("status") != "ready":
        raise SystemExit(f"the session did not start: {created}")
    exec_url = f"{url}/api/v1/sandboxes/{created['id']}/exec/"
    container = Session.objects.get(pk=created["id"]).container_id
    api = engine.client().api
    timings: dict[str, list[float]] = {"api": [], "docker exec": []}
    try:
        for i in range(n + 10):
            for kind in ("api", "docker exec") if i % 2 else ("docker exec", "api"):
                start = time.perf_counter()
                if kind == "api":
                    answer = http.post(exec_url, json={"cmd": cmd}, timeout=60).json()
                    ok = answer.get("returncode") == 0
                else:
                    exec_id = api.exec_create(container, cmd, user=SANDBOX_USER, workdir="/sandbox")["Id"]
                    api.exec_start(exec_id)
                    ok = api.exec_inspect(exec_id).get("ExitCode") == 0
                elapsed = (time.perf_counter() - start) * 1000
                if not ok:
                    raise SystemExit(f"{kind}: {cmd} failed")
                if i >= 10:  # the first few warm up connections and caches
                    timings[kind].append(elapsed)
    finally:
        http.delete(f"{url}/api/v1/sandboxes/{created['id']}/", timeout=60)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--runtimes", default="runc,runsc")
    parser.add_argument("--cmd", default="echo hi", help="the command (split on spaces)")
    args = parser.parse_args()
    sys.path.insert(0, str(BASE_DIR))
    from tests.stack import api_token, development_stack, django_setup

    django_setup()
    token = api_token("bench")
    rows = []
    for runtime in args.runtimes.split(","):
        with development_stack(workers=0, sessions=1, SANDBOX_RUNTIME=runtime) as stack:
            timings = measure(stack.url, token, args.n, args.cmd.split())
        rows.append((runtime, timings))
    print(f"\nexec round trip of {args.cmd!r}, {args.n} each, alternating (ms)")
    print(f"{'runtime':8} {'path':12} " + " ".join(f"{'p' + str(p):>7}" for p in PERCENTILES) + f" {'mean':>7}")
    for runtime, timings in rows:
        for kind, values in timings.items():
            figures = " ".join(f"{percentile(values, p):7.1f}" for p in PERCENTILES)
            print(f"{runtime:8} {kind:12} {figures} {statistics.mean(values):7.1f}")
        for p in (50, 95):
            overhead = percentile(timings["api"], p) - percentile(timings["docker exec"], p)
            ratio = percentile(timings["api"], p) / percentile(timings["docker exec"], p)
            print(f"{runtime:8} overhead p{p}: {overhead:+.1f} ms (API / docker exec = {ratio:.2f})")


if __name__ == "__main__":
    main()
