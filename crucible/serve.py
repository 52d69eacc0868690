"""``python -m crucible.serve``: the web tier as several Daphne processes on one listening socket.

One Daphne process is one Python interpreter on one core: a thousand WebSocket viewers, or a slow
view, hold up everyone it serves. This binds the address once and starts ``WEB_PROCESSES`` Daphne
processes on that socket (``daphne --fd``); the kernel hands each new connection to one of them.
Everything they share is outside them already: sessions and the database, the channel layer and the
per-user WebSocket slots in Redis. It stops them all on SIGTERM/SIGINT, and stops the rest (and
exits with an error) when one dies, so the process manager sees the web tier down and restarts it.
Killed itself, it takes them with it (each dies with its parent).

    python -m crucible.serve [--host 127.0.0.1] [--port 8000] [--processes N] [--handshake-timeout S]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

STOP_GRACE_S = 10.0
# How long a WebSocket handshake may take before Daphne drops it (its own default is 5 s). A
# handshake waits for the token check and the throttle; in a storm of a thousand viewers connecting
# while sandboxes start on the same cores, some took longer than 5 s, and Daphne dropped them (the
# client saw no HTTP answer at all: 41 of 1 000 in one run). Slower then, but connected.
HANDSHAKE_TIMEOUT_S = 30.0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m crucible.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    default = os.environ.get("WEB_PROCESSES") or str(min(os.cpu_count() or 1, 4))
    parser.add_argument("--processes", type=int, default=int(default), help="Daphne processes (WEB_PROCESSES)")
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=os.environ.get("WEBSOCKET_HANDSHAKE_TIMEOUT_S") or str(HANDSHAKE_TIMEOUT_S),
        help="seconds a WebSocket handshake may take (WEBSOCKET_HANDSHAKE_TIMEOUT_S)",
    )
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if not 0 < args.handshake_timeout <= 600:
        parser.error("--handshake-timeout (WEBSOCKET_HANDSHAKE_TIMEOUT_S) must be more than 0 and at most 600 seconds")
    return args


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before it execs Daphne: the kernel sends it SIGTERM when this process dies, so a
    SIGKILLed (or crashed) ``crucible.serve`` never leaves Daphnes behind, holding the socket."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def daphne_argv(fd: int, handshake_timeout_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "daphne",
        "--fd",
        str(fd),
        "--websocket_connect_timeout",
        f"{handshake_timeout_s:g}",
        "crucible.asgi:application",
    ]


def daphne(fd: int, handshake_timeout_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        daphne_argv(fd, handshake_timeout_s),
        pass_fds=(fd,),
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (this process starts no threads)
    )


def stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sock = listen(args.host, args.port)
    children = [daphne(sock.fileno(), args.handshake_timeout) for _ in range(args.processes)]
    print(f"crucible.serve: {args.processes} Daphne processes on {args.host}:{args.port}", flush=True)
    stopping = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.append(True))
    exit_code = 0
    while not stopping:
        ended = [child for child in children if child.poll() is not None]
        if ended:
            print(f"crucible.serve: Daphne {ended[0].pid} exited ({ended[0].returncode}); stopping", flush=True)
            exit_code = 1
            break
        time.sleep(0.2)
    stop(children)
    sock.close()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
