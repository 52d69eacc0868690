"""The Docker engine restarted under running containers, and the whole stack (the Procfile under
honcho, as ``make run`` starts it) stopped with Ctrl-C and started again.

Each test has its own PostgreSQL, Redis (and engine), so the suite's shared stack cannot take its jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.faults.test_faults import EXPECTED, STREAMER, check_output, no_containers_left, wait_streaming
from tests.stack import ROOT, PrivateDocker, PrivateStack, running_private_services, wait_until

pytestmark = pytest.mark.faults

SYSTEM_DOCKER = "unix:///var/run/docker.sock"
# 60 lines, one every 0.2 s: still running when the engine goes down.
LONG_STREAMER = "import time\nfor i in range(1, 61):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)\n"
LONG_EXPECTED = b"".join(f"line {i}\n".encode() for i in range(1, 61))


@pytest.fixture
def own_services():
    base = Path(tempfile.mkdtemp(prefix="crucible-faults-"))  # readable by the postgres user
    try:
        with running_private_services(base) as services:
            yield services
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_docker(tmp_path):
    engine = PrivateDocker()
    try:
        engine.start()
        engine.load_image("crucible-sandbox:latest")
        yield engine
    finally:
        engine.cleanup()


def test_the_docker_engine_restarted_while_containers_run(own_services, private_docker, tmp_path):
    db, redis = own_services
    stack = PrivateStack(tmp_path / "stack", db, redis, private_docker.host, workers=2)
    stack.prepare()
    stack.start()
    try:
        ids = [stack.submit(LONG_STREAMER, timeout_s=60) for _ in range(2)]
        for eid in ids:
            wait_streaming(stack, eid)
        started = time.monotonic()
        private_docker.restart(down_s=1.0)  # every container of the engine dies with it
        print(f"engine restarted in {time.monotonic() - started:.1f} s")
        for eid in ids:
            row = stack.wait_terminal(eid, 120)
            # The engine failing under the run is a platform fault: run again once, on the engine
            # that came back; the first attempt's output is kept up to the fault.
            assert (row["status"], row["attempts"]) == ("succeeded", 2), (row, stack.chunks(eid))
            check_output(stack, eid, expected=LONG_EXPECTED, attempts=2)
        no_containers_left(stack, timeout=15)
    except BaseException:
        print(stack.log_tail())
        raise
    finally:
        stack.stop()
        stack.remove_containers()


def _procfile_for(stack: PrivateStack, path) -> None:
    """The real Procfile, with the web port moved off 8000 (a developer's ``make run`` may hold it)."""
    text = (ROOT / "Procfile").read_text()
    text = re.sub(r"--port 8000\b", f"--port {stack.port}", text)
    assert f"--port {stack.port}" in text, "the Procfile's web command is expected to serve on --port 8000"
    path.write_text(text)


def _honcho(stack: PrivateStack, procfile, log_name: str) -> subprocess.Popen:
    log = open(stack.log_dir / log_name, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/honcho"), "start", "-f", str(procfile), "-d", str(ROOT)],
        cwd=ROOT,
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_make_run_stopped_with_ctrl_c_and_started_again_leaves_nothing_stuck(own_services, tmp_path):
    db, redis = own_services
    stack = PrivateStack(tmp_path / "stack", db, redis, SYSTEM_DOCKER)
    stack.prepare()
    procfile = tmp_path / "Procfile"
    _procfile_for(stack, procfile)
    honcho = _honcho(stack, procfile, "honcho-1.log")
    processes = set()
    try:
        wait_until(stack.web_up, 60, interval=0.3, what="web")
        eid = stack.submit(STREAMER)
        wait_streaming(stack, eid)
        processes = _descendants(honcho.pid)  # web, workers, their horses, the reconciler
        started = time.monotonic()
        honcho.send_signal(signal.SIGINT)  # Ctrl-C
        honcho.wait(30)
        took = time.monotonic() - started
        print(f"stack stopped {took:.1f} s after Ctrl-C")
        assert took < 10
        wait_until(lambda: not any(_alive(p) for p in processes), 10, what="every process of the stack gone")
        # The running evaluation was handed back, not left "running"; its container is gone.
        row = stack.row(eid)
        assert row["status"] == "queued", row
        assert not stack.containers()

        honcho = _honcho(stack, procfile, "honcho-2.log")
        wait_until(stack.web_up, 60, interval=0.3, what="web again")
        row = stack.wait_terminal(eid, 60)  # the reconciler's start-up pass enqueued it again
        assert (row["status"], row["attempts"]) == ("succeeded", 2), row
        check_output(stack, eid, attempts=2)
        assert any(b"worker_shutdown" in d for _, s, d in stack.chunks(eid) if s == "stderr")
        honcho.send_signal(signal.SIGINT)
        honcho.wait(30)
        with db.connect() as conn:
            stuck = conn.execute("select id from evaluations_evaluation where status in ('queued','running')")
            assert stuck.fetchall() == []
        assert not stack.containers()
        assert EXPECTED in b"".join(d for _, s, d in stack.chunks(eid) if s == "stdout")
    except BaseException:
        print(stack.log_tail(8000))
        raise
    finally:
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGINT)
            try:
                honcho.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
        for pid in processes | _descendants(honcho.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        stack.remove_containers()
