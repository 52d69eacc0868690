"""Many viewers: 1 000 WebSocket connections at once, push latency and the health endpoint meanwhile.

``--runs`` programs (default 10, one per user) each print ``T <i> <time.time()>`` every
``--interval`` seconds once every viewer is connected; ``--viewers`` connections (default 1 000,
arriving at ``--ramp`` a second) watch them: ``--hot`` of them
(default 100) on the first run, the rest spread evenly over all runs, each connection made by the
run's owner (viewers of a run are its owner and operators). Every line's delay from ``print`` in
the sandbox to its arrival at each connection is recorded (same host, same clock), and the
health endpoint is asked every 0.5 s while the runs stream. Clients are asyncio coroutines in this
process (``websockets``), so they share the machine with the stack: the figures are an upper
bound of what Crucible adds.

The stack (Daphne + workers, development database) is started with ``WEBSOCKET_MAX_PER_USER`` high
enough for the test (the default, 20 per user, refuses the 21st connection of one user with 4429).

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/ws_fanout.py [--viewers 1000] [--hot 100]
            [--runs 10] [--lines 40] [--interval 0.5] [--runtime runsc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.stack import api_token, development_stack, django_setup  # noqa: E402

PROGRAM = """\
import time
time.sleep({delay})
for i in range({lines}):
    print(f"T {{i}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def viewer(url: str, token: str, evaluation_id: str, latencies: list[float], closed: list[str]) -> None:
    from websockets.asyncio.client import connect

    ws_url = url.replace("http", "ws", 1) + f"/ws/evaluations/{evaluation_id}/?after=0"
    seen = set()
    try:
        async with connect(
            ws_url, additional_headers={"Authorization": f"Token {token}"}, origin=url, max_size=None, open_timeout=60
        ) as socket:
            async for raw in socket:
                arrival = time.time()
                message = json.loads(raw)
                if message["type"] == "end":
                    return
                if message["type"] != "log":
                    continue
                for line in message["data"].splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "T" and parts[1] not in seen:
                        seen.add(parts[1])
                        latencies.append((arrival - float(parts[2])) * 1000)
    except Exception as exc:
        closed.append(f"{type(exc).__name__}: {exc}"[:120])


async def health_prober(url: str, stop: asyncio.Event, timings: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = time.monotonic()
        await loop.run_in_executor(None, lambda: requests.get(f"{url}/api/v1/health/", timeout=10))
        timings.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(0.5)


async def watch(url: str, runs: list[tuple[str, str]], viewers: int, hot: int, ramp: float) -> tuple[list, list, list]:
    latencies: list[float] = []
    closed: list[str] = []
    health: list[float] = []
    plan = [runs[0]] * hot + [runs[i % len(runs)] for i in range(viewers - hot)]
    stop = asyncio.Event()
    prober = asyncio.create_task(health_prober(url, stop, health))
    tasks = []
    for token, evaluation_id in plan:
        tasks.append(asyncio.create_task(viewer(url, token, evaluation_id, latencies, closed)))
        await asyncio.sleep(1 / ramp)  # viewers arrive at ``ramp`` a second
    await asyncio.gather(*tasks)
    stop.set()
    await prober
    return latencies, closed, health


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--hot", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--runtime", default="runsc")
    parser.add_argument("--ramp", type=float, default=100, help="viewers connecting per second")
    parser.add_argument("--web-processes", type=int, default=1, help="Daphne processes (python -m crucible.serve)")
    args = parser.parse_args()

    django_setup()
    tokens = [api_token(f"viewer-{i}") for i in range(args.runs)]
    with development_stack(
        workers=args.runs,  # every run streams at once
        web_processes=args.web_processes,
        SANDBOX_RUNTIME=args.runtime,
        WEBSOCKET_MAX_PER_USER=str(args.viewers),
        SANDBOX_POOL_SIZE="1",
    ) as stack:
        runs = []
        delay = args.viewers / args.ramp + 8  # every viewer is connected before the first line
        for token in tokens:
            body = {
                "code": PROGRAM.format(delay=delay, lines=args.lines, interval=args.interval),
                "timeout_s": delay + args.lines * args.interval + 30,
            }
            response = requests.post(
                f"{stack.url}/api/v1/evaluations/", json=body, headers={"Authorization": f"Token {token}"}, timeout=30
            )
            response.raise_for_status()
            runs.append((token, response.json()["id"]))
        latencies, closed, health = asyncio.run(watch(stack.url, runs, args.viewers, args.hot, args.ramp))
    if not latencies:
        sys.exit(f"no line arrived; closed: {closed[:5]}")
    print(
        f"{args.viewers} viewers ({args.hot} on one run, the rest over {args.runs} runs; {args.runtime}; "
        f"{args.web_processes} Daphne), "
        f"{len(latencies)} line deliveries: push p50 {percentile(latencies, 50):.1f} ms, "
        f"p95 {percentile(latencies, 95):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.0f} ms"
    )
    print(
        f"health endpoint while they streamed ({len(health)} requests): median {statistics.median(health):.0f} ms, "
        f"worst {max(health):.0f} ms; connections that ended abnormally: {len(closed)} {closed[:3]}"
    )


if __name__ == "__main__":
    main()
