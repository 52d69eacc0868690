"""Many viewers: 1 000 WebSocket connections at once, push latency and the health endpoint meanwhile.

``--runs`` programs (default 10, one per user) each print ``T <i> <time.time()>`` every
``--interval`` seconds once every viewer is connected, run i starting i/runs of an interval after
the first, as independent runs would (``--lockstep``: all at the same moments, the worst case);
``--viewers`` connections (default 1 000, arriving at ``--ramp`` a second) watch them: ``--hot`` of them
(default 100) on the first run, the rest spread evenly over all runs, each connection made by the
run's owner (viewers of a run are its owner and operators). Every line's delay from ``print`` in
the sandbox to its arrival at each connection is recorded (same host, same clock), and the
health endpoint is asked every 0.5 s while the runs stream. Clients are asyncio coroutines
(``websockets``) in ``--client-processes`` processes (default 2), so that the clients' own event
loop is not what delays a line; they share the machine with the stack, and the script prints how
the machine's CPU was spent while the lines streamed (Daphne, the clients, the rest), so the
figures can be read as what Crucible adds on a machine that also runs the clients.

The stack (Daphne + workers, development database) is started with ``WEBSOCKET_MAX_PER_USER`` high
enough for the test (the default, 20 per user, refuses the 21st connection of one user with 4429),
and with ``CHANNEL_LAYER`` as given (``--channel-layer``, default the setting's default).

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/ws_fanout.py [--viewers 1000] [--hot 100]
            [--runs 10] [--lines 40] [--interval 0.5] [--runtime runsc] [--web-processes 1]
            [--client-processes 2] [--channel-layer pubsub|core] [--settle 8] [--lockstep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from datetime import datetime
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


async def viewer(
    url: str, token: str, evaluation_id: str, latencies: list, closed: list[str], connected: list[float]
) -> None:
    """One connection: when it was open (``connected``), each line's (number, delay in ms) into
    ``latencies``, and why it ended, if abnormally (``closed``)."""
    from websockets.asyncio.client import connect

    ws_url = url.replace("http", "ws", 1) + f"/ws/evaluations/{evaluation_id}/?after=0"
    seen = set()
    try:
        async with connect(
            ws_url, additional_headers={"Authorization": f"Token {token}"}, origin=url, max_size=None, open_timeout=60
        ) as socket:
            connected.append(time.time())
            async for raw in socket:
                arrival = time.time()
                message = json.loads(raw)
                if message["type"] == "end":
                    return
                if message["type"] != "log":
                    continue
                # ``ts``: when the worker published the chunk (same host clock), splitting the delay
                # into the engine's and worker's share and the channel layer's, Daphne's and the client's.
                published = datetime.fromisoformat(message["ts"]).timestamp() if message.get("ts") else arrival
                for line in message["data"].splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "T" and parts[1] not in seen:
                        seen.add(parts[1])
                        written = float(parts[2])
                        latencies.append((int(parts[1]), (arrival - written) * 1000, (published - written) * 1000))
    except Exception as exc:
        closed.append(f"{type(exc).__name__}: {exc}"[:120])


def health_prober(url: str, stop: threading.Event, timings: list[tuple[float, float]]) -> None:
    """Ask the health endpoint every 0.5 s until ``stop``; (when it was asked, its answer's time in ms)."""
    while not stop.is_set():
        started = time.monotonic()
        requests.get(f"{url}/api/v1/health/", timeout=10)
        timings.append((time.time(), (time.monotonic() - started) * 1000))
        stop.wait(0.5)


async def watch(url: str, plan: list[tuple[str, str]], ramp: float) -> tuple[list, list, list]:
    """Open the connections of ``plan`` at ``ramp`` a second; once all ended, every latency, abnormal
    end and time a connection was open."""
    latencies: list[tuple[int, float]] = []
    closed: list[str] = []
    connected: list[float] = []
    tasks = []
    for token, evaluation_id in plan:
        tasks.append(asyncio.create_task(viewer(url, token, evaluation_id, latencies, closed, connected)))
        await asyncio.sleep(1 / ramp)  # viewers arrive at ``ramp`` a second
    await asyncio.gather(*tasks)
    return latencies, closed, connected


def client_process(url: str, plan: list[tuple[str, str]], ramp: float, results) -> None:
    """One process of clients: its latencies, abnormal ends and connection times go to ``results``."""
    results.put(asyncio.run(watch(url, plan, ramp)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children that are still alive (from /proc)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return total
    return total + sum(cpu_seconds(int(child)) for child in children)


def resident_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and its children that are still alive (from /proc)."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return total
    return total + sum(resident_mb(int(child)) for child in children)


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; /proc/stat minus idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument("--settle", type=float, default=8, help="seconds after the ramp before the first line")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the viewers are spread over")
    parser.add_argument("--channel-layer", choices=["pubsub", "core"], default=None, help="CHANNEL_LAYER")
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="every run prints at the same moments (the worst case: all viewers are sent a line at once); "
        "by default run i starts printing i/runs of an interval later, as independent runs would",
    )
    args = parser.parse_args()

    django_setup()
    tokens = [api_token(f"viewer-{i}") for i in range(args.runs)]
    layer = {"CHANNEL_LAYER": args.channel_layer} if args.channel_layer else {}
    with development_stack(
        workers=args.runs,  # every run streams at once
        web_processes=args.web_processes,
        SANDBOX_RUNTIME=args.runtime,
        WEBSOCKET_MAX_PER_USER=str(args.viewers),
        SANDBOX_POOL_SIZE="1",
        **layer,
    ) as stack:
        runs = []
        connecting_s = args.viewers / args.ramp + args.settle  # every viewer is connected before the first line
        for index, token in enumerate(tokens):
            phase = 0.0 if args.lockstep else index / len(tokens) * args.interval
            body = {
                "code": PROGRAM.format(delay=connecting_s + phase, lines=args.lines, interval=args.interval),
                "timeout_s": connecting_s + args.lines * args.interval + 30,
            }
            response = requests.post(
                f"{stack.url}/api/v1/evaluations/", json=body, headers={"Authorization": f"Token {token}"}, timeout=30
            )
            response.raise_for_status()
            runs.append((token, response.json()["id"]))
        submitted = time.time()
        plan = [runs[0]] * args.hot + [runs[i % len(runs)] for i in range(args.viewers - args.hot)]
        n = args.client_processes
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        clients = [
            context.Process(target=client_process, args=(stack.url, plan[i::n], args.ramp / n, results))
            for i in range(n)
        ]
        health: list[tuple[float, float]] = []
        stop_probing = threading.Event()
        prober = threading.Thread(target=health_prober, args=(stack.url, stop_probing, health))
        prober.start()  # from the first connection to the last end
        for client in clients:
            client.start()
        # The lines stream from about ``connecting_s`` after submission: CPU is counted from then.
        time.sleep(max(0.0, submitted + connecting_s - time.time()))
        web_pid = stack.processes["web"].pid
        streaming = (time.monotonic(), machine_cpu_seconds(), cpu_seconds(web_pid))
        clients_at_start = sum(cpu_seconds(client.pid) for client in clients)
        time.sleep(args.lines * args.interval)
        web_cpu = cpu_seconds(web_pid) - streaming[2]
        web_rss = resident_mb(web_pid)
        machine_cpu = machine_cpu_seconds() - streaming[1]
        client_cpu = sum(cpu_seconds(client.pid) for client in clients) - clients_at_start
        window = time.monotonic() - streaming[0]
        outcomes = [results.get() for _ in clients]
        for client in clients:
            client.join()
        stop_probing.set()
        prober.join()
    by_line = [entry for outcome in outcomes for entry in outcome[0]]
    latencies = [entry[1] for entry in by_line]
    to_publish = [entry[2] for entry in by_line]
    after_publish = [entry[1] - entry[2] for entry in by_line]
    closed = [reason for outcome in outcomes for reason in outcome[1]]
    last_connected = max((t for outcome in outcomes for t in outcome[2]), default=submitted) - submitted
    if not latencies:
        sys.exit(f"no line arrived; closed: {closed[:5]}")
    print(
        f"{args.viewers} viewers ({args.hot} on one run, the rest over {args.runs} runs; {args.runtime}; "
        f"{args.web_processes} Daphne; channel layer {args.channel_layer or 'default'}; "
        f"clients in {n} processes), "
        f"{len(latencies)} line deliveries: push p50 {percentile(latencies, 50):.1f} ms, "
        f"p95 {percentile(latencies, 95):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.0f} ms"
    )
    lines_from = submitted + connecting_s
    answers = [ms for _, ms in health]
    while_connecting = [ms for at, ms in health if at < submitted + last_connected] or [0.0]
    while_streaming = [ms for at, ms in health if lines_from <= at < lines_from + args.lines * args.interval] or [0.0]
    print(
        f"health endpoint from the first connection to the last end ({len(health)} requests): "
        f"median {statistics.median(answers):.0f} ms, worst {max(answers):.0f} ms (worst while viewers connected "
        f"{max(while_connecting):.0f} ms, while the lines streamed {max(while_streaming):.0f} ms); "
        f"connections that ended abnormally: {len(closed)} {closed[:3]}"
    )
    print(
        f"of which from print to the worker's publish p50 {percentile(to_publish, 50):.1f} ms, "
        f"p95 {percentile(to_publish, 95):.1f} ms; from the publish to the viewer p50 "
        f"{percentile(after_publish, 50):.1f} ms, p95 {percentile(after_publish, 95):.1f} ms"
    )
    quarters = []
    for quarter in range(4):
        first, last = quarter * args.lines // 4, (quarter + 1) * args.lines // 4
        part = [value for line, value, _ in by_line if first <= line < last]
        if part:
            p50, p95 = percentile(part, 50), percentile(part, 95)
            quarters.append(f"lines {first}-{last - 1} p50 {p50:.0f} / p95 {p95:.0f} ms")
    print(
        "push latency through the run: " + "; ".join(quarters) + f"; the last viewer connected "
        f"{last_connected:.1f} s after submission, the lines began about {connecting_s:.1f} s after it"
    )
    per_line: dict[int, list[float]] = {}
    per_line_published: dict[int, list[float]] = {}
    for line, value, published in by_line:
        per_line.setdefault(line, []).append(value)
        per_line_published.setdefault(line, []).append(published)
    slowest = sorted(per_line.items(), key=lambda item: -percentile(item[1], 95))[:3]
    print(
        "the slowest lines (p95 over their deliveries to every viewer of every run; of which to the publish): "
        + ", ".join(
            f"line {line} {percentile(values, 95):.0f} ms ({percentile(per_line_published[line], 95):.0f} ms)"
            for line, values in slowest
        )
    )
    cores = os.cpu_count() or 1
    print(
        f"CPU while the lines streamed ({window:.0f} s, {cores} cores): machine busy "
        f"{machine_cpu / window / cores * 100:.0f}%; Daphne {web_cpu / window * 100:.0f}% of a core, "
        f"({web_cpu / max(len(latencies), 1) * 1e6:.0f} µs per line delivered), "
        f"the clients {client_cpu / window * 100:.0f}% of a core "
        f"({client_cpu / max(machine_cpu, 1e-9) * 100:.0f}% of the machine's busy time), "
        f"everything else (workers, sandboxes, PostgreSQL, Redis, other users of the machine) "
        f"{(machine_cpu - web_cpu - client_cpu) / window * 100:.0f}% of a core; "
        f"Daphne's resident memory after the last line {web_rss:.0f} MB"
    )


if __name__ == "__main__":
    main()
