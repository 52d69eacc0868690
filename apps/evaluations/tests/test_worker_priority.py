"""A worker runs at a lower CPU priority than the web (``WORKER_NICE``), so the API, the health
endpoint and live output keep their CPU while workers start and record runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rq import Worker

from crucible import redis_clients
from tests.stack import wait_until

ROOT = Path(__file__).resolve().parents[3]


def niceness(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)


def test_a_second_start_in_one_process_sets_the_same_priority_rather_than_lowering_it_again(settings, monkeypatch):
    """The command sets the niceness (``os.nice`` would add to it: 5, 10, 15, 19 in a test process)."""
    from apps.evaluations.management.commands import crucible_worker

    settings.WORKER_NICE = 7
    set_to = []
    monkeypatch.setattr(crucible_worker.os, "getpriority", lambda *_: set_to[-1] if set_to else 0)
    monkeypatch.setattr(crucible_worker.os, "setpriority", lambda _w, _p, value: set_to.append(value))
    monkeypatch.setattr(crucible_worker.RQWorkerCommand, "handle", lambda self, *a, **k: None)
    crucible_worker.Command().handle()
    crucible_worker.Command().handle()
    assert set_to == [7]


@pytest.mark.parametrize(("setting", "expected"), [({}, 5), ({"WORKER_NICE": "3"}, 3), ({"WORKER_NICE": "0"}, 0)])
def test_a_worker_lowers_its_own_priority_as_set(setting, expected, tmp_path):
    name = f"nice-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "CRUCIBLE_ENV": "test", "SANDBOX_POOL_SIZE": "0", **setting}
    argv = [sys.executable, "manage.py", "crucible_worker", "--without-scheduler", "--name", name]
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        registered = lambda: name in {w.name for w in Worker.all(connection=redis_clients.rq_connection())}  # noqa: E731
        wait_until(lambda: worker.poll() is not None or registered(), 60, what="the worker to register")
        assert worker.poll() is None, log.read_text()
        assert niceness(worker.pid) == expected
        assert niceness(os.getpid()) == 0  # the process that started it (the web, here the test) is left as it was
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
