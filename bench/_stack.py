"""Start a private Crucible stack (Daphne + RQ workers) for a benchmark, against the local services.

Uses the development database and Redis from data/local.env, on its own port, and stops
everything it started on exit. Benchmarks never run user code outside the sandbox.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
    import django

    django.setup()


def token_for(username: str) -> str:
    out = subprocess.run(
        [PYTHON, "manage.py", "create_api_token", username, "--name", "benchmark"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def stack(port: int = 8765, workers: int = 2):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = ROOT / "data" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = [
        subprocess.Popen(
            [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port), "crucible.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=open(logs / "bench-web.log", "w"),
            stderr=subprocess.STDOUT,
        )
    ]
    for n in range(workers):
        processes.append(
            subprocess.Popen(
                [PYTHON, "manage.py", "crucible_worker", "--without-scheduler", "--name", f"bench-{os.getpid()}-{n}"],
                cwd=ROOT,
                env=env,
                stdout=open(logs / f"bench-worker-{n}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(base + "/api/v1/health/", timeout=2).status_code in (200, 503):
                    break
            time.sleep(0.2)
        yield base
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
