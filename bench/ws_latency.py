"""Push latency: from a line written inside the sandbox to its arrival at a WebSocket client.

A program in the sandbox prints ``T <i> <time.time()>`` every 20 ms; the client, on the same host
(same clock), subscribes to ``/ws/evaluations/{id}/`` before the program starts and, for each line
in each ``log`` message, records ``arrival - written``. Prints count, p50, p95, p99 and max.

The path measured is the whole pipeline: the program's stdout -> Docker's stream -> the worker's
runner -> the recorder (which coalesces output for up to 50 ms) -> PostgreSQL -> the channel
layer (Redis) -> Daphne -> the client.

Against a running Crucible::

    CRUCIBLE_URL=http://127.0.0.1:8000 CRUCIBLE_TOKEN=cru_… .venv/bin/python bench/ws_latency.py

Or self-contained (a scratch database, Daphne and one worker started and removed by the script)::

    .venv/bin/python bench/ws_latency.py --start
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

PROGRAM = """\
import time
for i in range({lines}):
    print(f"T {{i}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""


def measure(url: str, token: str, lines: int, interval: float) -> list[float]:
    import requests
    from websockets.sync.client import connect

    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    body = {
        "code": PROGRAM.format(lines=lines, interval=interval),
        "language": "python",
        "timeout_s": lines * interval + 60,
    }
    response = session.post(f"{url}/api/v1/evaluations/", json=body, timeout=30)
    response.raise_for_status()
    evaluation_id = response.json()["id"]
    ws_url = url.replace("http", "ws", 1) + f"/ws/evaluations/{evaluation_id}/?after=0"
    latencies: list[float] = []
    seen = set()
    with connect(ws_url, additional_headers={"Authorization": f"Token {token}"}, origin=url, max_size=None) as socket:
        for raw in socket:
            arrival = time.time()
            message = json.loads(raw)
            if message["type"] == "end":
                if message["status"] != "succeeded":
                    sys.exit(f"the benchmark program ended {message['status']}")
                break
            if message["type"] != "log":
                continue
            for line in message["data"].splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "T" and parts[1] not in seen:
                    seen.add(parts[1])
                    latencies.append((arrival - float(parts[2])) * 1000)
    return latencies


def report(latencies: list[float], lines: int) -> None:
    if not latencies:
        sys.exit("no lines arrived")
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    print(f"lines received   {len(ordered)} of {lines}")
    print(f"latency p50      {pct(50):7.1f} ms")
    print(f"latency p95      {pct(95):7.1f} ms")
    print(f"latency p99      {pct(99):7.1f} ms")
    print(f"latency max      {ordered[-1]:7.1f} ms")
    print(f"latency mean     {statistics.fmean(ordered):7.1f} ms")


def with_scratch_stack(run) -> None:
    """Create a scratch database, migrate it, start Daphne + a worker on it, run, clean up."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
    os.environ.setdefault("CRUCIBLE_ENV", "test")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    import subprocess

    from django.db import connection

    from tests.stack import TestDatabaseStack

    name = f"crucible_bench_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    stack = None
    try:
        stack = TestDatabaseStack(name, Path(tempfile.mkdtemp(prefix="crucible-bench-")))
        env = stack.env
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=BASE_DIR)
        out = subprocess.run(
            [*manage, "create_api_token", "bench"], env=env, check=True, cwd=BASE_DIR, capture_output=True, text=True
        ).stdout
        token = out.strip().splitlines()[-1].strip()
        stack.start()
        run(stack.url, token)
    finally:
        if stack is not None and stack.processes:
            stack.stop()
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("CRUCIBLE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("CRUCIBLE_TOKEN"))
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines (default 0.02)")
    parser.add_argument("--start", action="store_true", help="start a scratch stack instead of using --url")
    args = parser.parse_args()

    def run(url, token):
        print(f"{args.lines} lines, one every {args.interval * 1000:.0f} ms, against {url}")
        report(measure(url.rstrip("/"), token, args.lines, args.interval), args.lines)

    if args.start:
        with_scratch_stack(run)
    elif not args.token:
        sys.exit("set CRUCIBLE_TOKEN or pass --token (or use --start)")
    else:
        run(args.url, args.token)


if __name__ == "__main__":
    main()
