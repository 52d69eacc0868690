"""The web tier as several Daphne processes on one socket (python -m crucible.serve)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.stack import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def web_tier():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "crucible.serve", "--port", str(port), "--processes", "2"],
        cwd=ROOT,
        env={**os.environ, "CRUCIBLE_ENV": "test"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api/v1/health/live/"
    try:
        wait_until(lambda: requests.get(url, timeout=2).status_code == 200, timeout=60, what="the web tier")
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            for child in children_of(process.pid):
                os.kill(child, signal.SIGKILL)
        process.wait(10)


def test_two_daphne_processes_answer_on_one_port(web_tier):
    process, url = web_tier
    daphnes = children_of(process.pid)
    assert len(daphnes) == 2
    answers = [requests.get(url, timeout=10, headers={"Connection": "close"}).status_code for _ in range(30)]
    assert answers == [200] * 30


def test_sigterm_stops_every_daphne_and_exits_cleanly(web_tier):
    process, _url = web_tier
    daphnes = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not [
        pid
        for pid in daphnes
        if Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    ]


def test_when_one_daphne_dies_the_tier_stops_so_the_process_manager_restarts_it(web_tier):
    process, _url = web_tier
    first, second = children_of(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(30) == 1
    assert b"exited" in process.stdout.read()
    wait_until(lambda: not Path(f"/proc/{second}").exists(), timeout=15, what="the other Daphne to stop")
