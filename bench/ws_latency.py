"""Push latency: from a line written inside the sandbox to its arrival at a WebSocket client.

A program in the sandbox prints ``T <i> <time.time()>`` every 20 ms; the client, on the same host
(same clock), subscribes to ``/ws/evaluations/{id}/`` right after submitting and, for each line in
each ``log`` message, records ``arrival - written``. Lines printed before the client subscribed
arrive by replay; they are counted too (they are what a viewer joining late sees).

The path measured is the whole pipeline: the program's stdout -> Docker's stream -> the worker's
runner -> the recorder (which publishes each piece at once; it stores in batches beside) -> the
channel layer (Redis) -> Daphne -> the client. Beside it, the same program in a plain container
(docker SDK, same image and runtime, no network) read straight from its attach stream: the
engine's own share of the delay, which Crucible cannot go below.

By default, for each runtime in ``--runtimes`` (runc and gVisor's runsc), a development stack
(Daphne + one worker on the development database, see tests/stack.py) is started with
``SANDBOX_RUNTIME`` set, and the figures are printed side by side (p50, p95, p99, max)::

    CRUCIBLE_ENV=development .venv/bin/python bench/ws_latency.py [--lines 300] [--runtimes runc,runsc]

Against an already running Crucible (one column, whatever runtime it uses, no plain baseline)::

    .venv/bin/python bench/ws_latency.py --url http://127.0.0.1:8000 --token cru_…
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

PROGRAM = """\
import time
for i in range({lines}):
    print(f"T {{i}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""
PERCENTILES = (50, 95, 99)


def _record(text: str, arrival: float, seen: set[str], latencies: list[float]) -> None:
    """Each ``T i written`` line of ``text`` not seen before: its delay in ms."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "T" and parts[1] not in seen:
            seen.add(parts[1])
            latencies.append((arrival - float(parts[2])) * 1000)


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
            _record(message["data"], arrival, seen, latencies)
    return latencies


def measure_plain(runtime: str, lines: int, interval: float) -> list[float]:
    """The same program in a plain container (same image, same runtime, no network), read from its
    attach stream, subscribed before it starts."""
    from django.conf import settings

    from apps.sandboxing import engine

    container = engine.client().containers.create(
        settings.SANDBOX_IMAGE,
        ["python3", "-c", PROGRAM.format(lines=lines, interval=interval)],
        network_mode="none",
        runtime=runtime,
    )
    latencies: list[float] = []
    seen: set[str] = set()
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=False)
        container.start()
        for data in stream:
            _record(data.decode(errors="replace"), time.time(), seen, latencies)
    finally:
        container.remove(force=True)
    return latencies


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean of ``latencies`` (ms)."""
    if not latencies:
        sys.exit("no lines arrived")
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    figures = {f"p{p}": pct(p) for p in PERCENTILES}
    figures.update(max=ordered[-1], mean=statistics.fmean(ordered), lines=len(ordered))
    return figures


def print_table(columns: dict[str, dict[str, float]], lines: int) -> None:
    """One column per (path, runtime), one row per figure."""
    names = list(columns)
    print(f"{'':14}" + "".join(f"{name:>22}" for name in names))
    print(f"{'lines':14}" + "".join(f"{int(columns[n]['lines']):>15} of {lines:<4}" for n in names))
    for row in [f"p{p}" for p in PERCENTILES] + ["max", "mean"]:
        print(f"{'latency ' + row:14}" + "".join(f"{columns[n][row]:>19.1f} ms" for n in names))


def side_by_side(runtimes: list[str], lines: int, interval: float) -> None:
    """For each runtime: Crucible (a development stack with that runtime) and the plain container."""
    sys.path.insert(0, str(BASE_DIR))
    from tests.stack import api_token, development_stack, django_setup

    django_setup()
    token = api_token("bench")
    columns: dict[str, dict[str, float]] = {}
    for runtime in runtimes:
        with development_stack(workers=1, SANDBOX_RUNTIME=runtime) as stack:
            measure(stack.url, token, 5, interval)  # warm up: image, runtime, worker
            columns[f"crucible {runtime}"] = percentiles(measure(stack.url, token, lines, interval))
        columns[f"plain {runtime}"] = percentiles(measure_plain(runtime, lines, interval))
    print_table(columns, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="measure this running Crucible instead of starting stacks")
    parser.add_argument("--token", default=os.environ.get("CRUCIBLE_TOKEN"))
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines (default 0.02)")
    parser.add_argument("--runtimes", default="runc,runsc", help="engine runtimes to compare, comma-separated")
    args = parser.parse_args()
    print(f"{args.lines} lines, one every {args.interval * 1000:.0f} ms")
    if args.url is None:
        side_by_side(args.runtimes.split(","), args.lines, args.interval)
    elif not args.token:
        sys.exit("set CRUCIBLE_TOKEN or pass --token")
    else:
        print_table(
            {"crucible": percentiles(measure(args.url.rstrip("/"), args.token, args.lines, args.interval))}, args.lines
        )


if __name__ == "__main__":
    main()
