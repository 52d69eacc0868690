"""A real Crucible stack for integration tests: Daphne (HTTP + WebSocket) and one RQ worker.

Both run as subprocesses of the test process, against pytest-django's test database and this
test process's own Redis database, so what a test writes through the ORM the stack sees, and
what the stack publishes the test can watch.

Use it::

    from tests.live_stack import live_stack  # noqa: F401  (outside tests/, import the fixture)

    @pytest.mark.django_db(transaction=True)   # or the ``transactional_db`` fixture
    def test_something(live_stack):
        requests.get(live_stack.url + "/api/v1/health/")

* The test must use a *transactional* database (``transaction=True``, ``transactional_db`` or
  ``live_server``): with the default per-test transaction, nothing the test writes is committed,
  so the subprocesses would never see it.
* The fixture is module-scoped: it starts for the first test of a module that asks for it and
  stops after that module (a few seconds each time). Not session-scoped on purpose: its worker
  takes jobs from the real queues (high, default, low) of this test process's Redis database, so
  while it runs it would steal the jobs of other modules' in-process workers. Tests of one module
  share it and must not assume an empty queue or database beyond what ``transactional_db`` gives.
* How the subprocesses find the right services: they inherit this process's environment
  (``CRUCIBLE_ENV=test``, ``REDIS_URL``, ``PYTEST_XDIST_WORKER`` …), so ``crucible/settings.py``
  offsets the Redis database exactly as it does here; ``DATABASE_URL`` is rewritten to name the
  test database (``django.db.connection.settings_dict["NAME"]`` after ``django_db_setup``).
* Containers: the worker's sandbox containers carry a known ``CRUCIBLE_INSTANCE`` label and any
  left behind (a worker killed mid-run) are removed at the end.
* When something fails, ``live_stack.logs()`` returns both processes' output; it is also printed
  if the stack does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import requests

BASE_DIR = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 45
STOP_GRACE_S = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_database_url(name: str) -> str:
    from django.conf import settings

    return urlunparse(urlparse(settings.DATABASE_URL)._replace(path="/" + name))


@dataclass
class LiveStack:
    """A running Daphne + RQ worker. ``url`` is the HTTP base URL, ``ws_url`` the WebSocket one."""

    url: str
    ws_url: str
    database_name: str
    worker_name: str
    instance: str
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def logs(self) -> str:
        parts = []
        for name in self.processes:
            path = self.log_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {name} ({path}) -----\n{text[-20000:]}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"live stack: {name} exited with {process.returncode}\n{self.logs()}")

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, env: dict[str, str]) -> None:
        port = int(urlparse(self.url).port)
        python = sys.executable
        daphne = [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "crucible.asgi:application"]
        worker = [python, "manage.py", "crucible_worker", "--without-scheduler", "--name", self.worker_name]
        for name, argv in (("daphne", daphne), ("worker", worker)):
            log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the process's life)
            self.processes[name] = subprocess.Popen(
                argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            log.close()
        # settings.py labels test containers "<CRUCIBLE_INSTANCE>-test-<xdist worker>-<pid>"; the
        # worker's job horse is forked from it, so the pid is the worker's.
        xdist = env.get("PYTEST_XDIST_WORKER", "main")
        self.instance = f"{env.get('CRUCIBLE_INSTANCE', 'crucible')}-test-{xdist}-{self.processes['worker'].pid}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        import django_rq
        from rq import Worker

        deadline = time.monotonic() + READY_TIMEOUT_S
        web_ready = worker_ready = False
        while time.monotonic() < deadline:
            self.check_alive()
            if not web_ready:
                try:
                    web_ready = requests.get(self.url + "/api/v1/health/", timeout=2).status_code in (200, 503)
                except requests.RequestException:
                    pass
            if not worker_ready:
                names = {w.name for w in Worker.all(connection=django_rq.get_connection("default"))}
                worker_ready = self.worker_name in names
            if web_ready and worker_ready:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"live stack did not come up in {READY_TIMEOUT_S}s\n{self.logs()}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # The worker waits for a running job on SIGTERM; past the grace, kill the group.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self._remove_containers()

    def _remove_containers(self) -> None:
        try:
            from apps.sandboxing import engine
            from apps.sandboxing.runner import LABEL_INSTANCE

            api = engine.client().api
            for container in api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"}):
                api.remove_container(container["Id"], force=True, v=True)
        except Exception as exc:  # Docker may be absent for tests that never run a program
            print(f"live stack: could not clean up containers: {exc}", file=sys.stderr)


def start_live_stack(database_name: str, log_dir: Path) -> LiveStack:
    """Start Daphne and a worker on the given test database; the caller must ``stop()`` it."""
    port = _free_port()
    xdist = os.environ.get("PYTEST_XDIST_WORKER", "main")
    worker_name = f"live-stack-{xdist}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "crucible.settings",
            "CRUCIBLE_ENV": "test",
            "DATABASE_URL": _test_database_url(database_name),
            # Short connection reuse so the test database can be dropped soon after the stack stops.
            "DATABASE_CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    stack = LiveStack(
        url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        database_name=database_name,
        worker_name=worker_name,
        instance="",
        log_dir=log_dir,
    )
    stack.start(env)
    return stack


@pytest.fixture(scope="module")
def live_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """Daphne + one RQ worker on the test database; yields a ``LiveStack`` (``.url``, ``.ws_url``)."""
    from django.db import connection

    stack = start_live_stack(connection.settings_dict["NAME"], tmp_path_factory.mktemp("live-stack"))
    try:
        yield stack
    finally:
        stack.stop()
