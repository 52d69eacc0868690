"""The web tier as several Daphne processes on one socket (python -m crucible.serve)."""

from __future__ import annotations

import contextlib
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


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    except OSError:
        return False


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
        daphnes = children_of(process.pid)  # before the kill: then they are init's
        if process.poll() is None:
            process.kill()
        for child in daphnes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.wait(10)


def test_two_daphne_processes_answer_on_one_port(web_tier):
    process, url = web_tier
    daphnes = children_of(process.pid)
    assert len(daphnes) == 2
    answers = [requests.get(url, timeout=10, headers={"Connection": "close"}).status_code for _ in range(30)]
    assert answers == [200] * 30


def test_each_daphne_gives_a_websocket_handshake_thirty_seconds_not_daphnes_five(web_tier):
    process, _url = web_tier
    for daphne in children_of(process.pid):
        argv = Path(f"/proc/{daphne}/cmdline").read_text().split("\0")
        assert argv[argv.index("--websocket_connect_timeout") + 1] == "30"


def test_the_handshake_timeout_is_a_setting_and_nonsense_is_refused(monkeypatch, capsys):
    from crucible import serve

    monkeypatch.setenv("WEBSOCKET_HANDSHAKE_TIMEOUT_S", "12.5")
    assert serve.parse([]).handshake_timeout == 12.5
    for wrong in ("soon", "0", "-1", "601"):
        monkeypatch.setenv("WEBSOCKET_HANDSHAKE_TIMEOUT_S", wrong)
        with pytest.raises(SystemExit) as exited:
            serve.parse([])
        assert exited.value.code == 2
        assert "handshake-timeout" in capsys.readouterr().err


def test_sigterm_stops_every_daphne_and_exits_cleanly(web_tier):
    process, _url = web_tier
    daphnes = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not [pid for pid in daphnes if alive(pid)]


def test_when_one_daphne_dies_the_tier_stops_so_the_process_manager_restarts_it(web_tier):
    process, _url = web_tier
    first, second = children_of(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(30) == 1
    assert b"exited" in process.stdout.read()
    wait_until(lambda: not Path(f"/proc/{second}").exists(), timeout=15, what="the other Daphne to stop")


def test_a_killed_web_tier_takes_its_daphnes_with_it(web_tier):
    process, _url = web_tier
    daphnes = children_of(process.pid)
    assert len(daphnes) == 2
    process.kill()
    process.wait(10)
    wait_until(
        lambda: not [pid for pid in daphnes if alive(pid)], timeout=15, what="the Daphnes of a killed web tier to stop"
    )
