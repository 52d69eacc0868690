"""The whole Crucible stack as subprocesses: the one way tests, the fault suite and benchmarks start it.

Pieces (each optional, combine what you need):

* ``Stack``: Daphne (HTTP + WebSocket), N workers (``manage.py crucible_worker``) and, if asked, the
  reconciler (``python -m crucible.cron``), started with the Procfile's commands and the environment
  you give it. ``start()`` returns once the web answers and every worker has registered with RQ;
  ``stop()`` sends SIGTERM to each process group, then SIGKILL past a grace, and also kills the work
  horses. With ``supervise=True`` a small thread restarts dead workers and the reconciler (what
  systemd's ``Restart=always`` would do).
* ``PrivatePostgres``, ``PrivateRedis`` (``running_private_services``) and ``PrivateDocker``: throwaway
  services for the fault suite, which restarts and flushes them while the shared ones stay untouched.
  The private ``dockerd`` runs in a network namespace of its own (``unshare --net``): started with
  ``--bridge=none`` in the host's namespace it would delete the host's ``docker0`` interface.
* ``TestDatabaseStack`` and the ``live_stack`` fixture: a stack on pytest-django's test database and
  this test process's Redis database, for tests that drive a real server (browser, CLI).
* ``PrivateStack``: a stack on private services, with the fault suite's API and database helpers.
* ``development_stack()``: a stack on the development services from ``data/local.env`` (benchmarks).

How a live-stack test uses it::

    from tests.stack import live_stack  # noqa: F401  (outside tests/, import the fixture)

    @pytest.mark.django_db(transaction=True)
    def test_something(live_stack):
        requests.get(live_stack.url + "/api/v1/health/")

The test database must be *transactional*: what a test writes inside the default per-test
transaction is never committed, so the subprocesses would not see it. The fixture is module-scoped,
not session-scoped, because its worker takes jobs from this test process's real queues and would
steal other modules' jobs while it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TERMINAL = {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}
READY_TIMEOUT_S = 60
STOP_GRACE_S = 15
# How long a test's teardown waits for the runs it left on a live stack to end.
SETTLE_TIMEOUT_S = 90
# The label every sandbox container carries with its installation's CRUCIBLE_INSTANCE.
INSTANCE_LABEL = "org.crucible.instance"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (which is returned); errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 (services come and go in these tests)
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def manage(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run ``manage.py`` (with ``env``, else this process's environment); its stdout, or RuntimeError."""
    out = subprocess.run(
        [PYTHON, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def api_token(username: str, name: str = "benchmark", env: dict[str, str] | None = None) -> str:
    """A new API token for ``username`` (created if missing), through ``manage.py create_api_token``."""
    return manage("create_api_token", username, "--name", name, env=env).strip().splitlines()[-1].strip()


def django_setup() -> None:
    """Configure Django in a script (benchmarks) that reads the database the stack uses."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")
    import django

    django.setup()


# --- the stack's processes -----------------------------------------------------------------------


class Stack:
    """Daphne + ``workers`` workers (+ the reconciler if ``cron``) with ``env``; ``url`` is the HTTP base."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        workers: int = 1,
        cron: bool = False,
        sessions: int = 0,
        web_processes: int = 1,
        port: int | None = None,
        name: str = "stack",
        rq_connection: Callable[[], object] | None = None,
    ):
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.n_workers = workers
        self.cron = cron
        self.n_sessions = sessions
        self.web_processes = web_processes
        self.session_host_names: dict[str, str] = {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.rq_connection = rq_connection
        # Prepended to a worker's command line (e.g. ``nsenter --net=...``: a worker on another host).
        self.worker_wrapper: list[str] = []
        self.processes: dict[str, subprocess.Popen] = {}
        self.worker_names: dict[str, str] = {}
        self.supervise = False
        self._stop_supervisor = threading.Event()
        self._lock = threading.RLock()

    # --- starting -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it open)
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def start_web(self) -> None:
        if self.web_processes > 1:  # several Daphne processes on one socket, as the Procfile runs them
            argv = [PYTHON, "-m", "crucible.serve", "--port", str(self.port), "--processes", str(self.web_processes)]
        else:
            argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "crucible.asgi:application"]
        self._spawn("web", argv)

    def start_worker(self, n: int) -> None:
        rq_name = f"{self.name}-w{n}-{uuid.uuid4().hex[:4]}"
        self.worker_names[f"worker{n}"] = rq_name
        argv = [PYTHON, "manage.py", "crucible_worker", "--without-scheduler", "--name", rq_name]
        self._spawn(f"worker{n}", [*self.worker_wrapper, *argv])

    def start_cron(self) -> None:
        self._spawn("cron", [PYTHON, "-m", "crucible.cron"])

    def start_session_host(self, n: int) -> None:
        host_name = f"{self.name}-s{n}-{uuid.uuid4().hex[:4]}"
        self.session_host_names[f"sessions{n}"] = host_name
        self._spawn(f"sessions{n}", [PYTHON, "manage.py", "crucible_sessions", "--name", host_name])

    def start(self, supervise: bool = False) -> Stack:
        """Start every process and wait until the web answers and the workers are registered."""
        self.start_web()
        for n in range(self.n_workers):
            self.start_worker(n)
        if self.cron:
            self.start_cron()
        for n in range(self.n_sessions):
            self.start_session_host(n)
        try:
            wait_until(self._ready, READY_TIMEOUT_S, interval=0.2, what="the stack to come up")
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.logs()}") from None
        self.supervise = supervise
        threading.Thread(target=self._supervisor, daemon=True).start()
        return self

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"stack: {name} exited with {process.returncode}\n{self.logs()}")

    def web_up(self) -> bool:
        """The web answers (503 counts: it is up and reporting a service down)."""
        return requests.get(self.url + "/api/v1/health/", timeout=2).status_code in (200, 503)

    def _ready(self) -> bool:
        self.check_alive()
        if not self.web_up():
            return False
        if self.session_host_names:
            from apps.sessions import rpc

            if not set(self.session_host_names.values()) <= rpc.live_hosts():
                return False
        if self.rq_connection is None:
            return True
        from rq import Worker

        registered = {worker.name for worker in Worker.all(connection=self.rq_connection())}
        return set(self.worker_names.values()) <= registered

    def _supervisor(self) -> None:
        while not self._stop_supervisor.wait(0.5):
            if not self.supervise:
                continue
            with self._lock:
                for n in range(self.n_workers):
                    process = self.processes.get(f"worker{n}")
                    if process is not None and process.poll() is not None:
                        self.start_worker(n)
                process = self.processes.get("cron")
                if process is not None and process.poll() is not None:
                    self.start_cron()

    # --- breaking and stopping ---------------------------------------------------------------
    def kill_web(self) -> None:
        """Kill Daphne at once (SIGKILL): every HTTP and WebSocket connection drops without a goodbye."""
        process = self.processes["web"]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def start_web_again(self) -> None:
        """Start Daphne on the same port and wait until it answers."""
        self.start_web()
        wait_until(self.web_up, READY_TIMEOUT_S, interval=0.2, what="the web to come back")

    def horse_pids(self, worker: str) -> list[int]:
        """The work horse(s) forked by a worker process (each in its own process group)."""
        out = subprocess.run(["pgrep", "-P", str(self.processes[worker].pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def worker_for(self, rq_name: str) -> str:
        """``worker<n>`` for a worker's RQ name (what an evaluation's ``worker`` column holds)."""
        return next(key for key, value in self.worker_names.items() if value == rq_name)

    def kill_worker(self, worker: str, sig=signal.SIGKILL, with_horse: bool = True) -> None:
        with self._lock:
            process = self.processes[worker]
            horses = self.horse_pids(worker) if with_horse else []
            os.killpg(process.pid, sig)
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after the grace (and every work horse)."""
        self._stop_supervisor.set()
        with self._lock:
            workers = [name for name in self.processes if name.startswith("worker")]
            horses = [pid for name in workers for pid in self.horse_pids(name)]
            for process in self.processes.values():
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for process in self.processes.values():
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    # A worker waits for its running job on SIGTERM; past the grace, kill the group.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    def logs(self, tail: int = 20000) -> str:
        """Every process's output (the last ``tail`` characters of each), for failure messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"----- {path.name} ({path}) -----\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def log_tail(self, n: int = 4000) -> str:
        return self.logs(tail=n)

    def manage(self, *argv: str, timeout: float = 300) -> str:
        """Run ``manage.py`` with the stack's environment; its stdout."""
        return manage(*argv, env=self.env, timeout=timeout)

    def remove_containers(self, docker_host: str | None = None) -> None:
        """Remove the sandbox containers this stack's workers left behind (a worker killed mid-run)."""
        import docker

        try:
            client = docker.DockerClient(base_url=docker_host or self.env.get("DOCKER_HOST", ""), timeout=10)
            for instance in self.instances():
                for container in client.containers.list(all=True, filters={"label": f"{INSTANCE_LABEL}={instance}"}):
                    container.remove(force=True, v=True)
        except Exception as exc:  # noqa: BLE001 (Docker may be absent for tests that never run a program)
            print(f"stack: could not clean up containers: {exc}", file=sys.stderr)

    def instances(self) -> list[str]:
        """The CRUCIBLE_INSTANCE labels this stack's containers carry."""
        return [self.env.get("CRUCIBLE_INSTANCE", "crucible")]


# --- a stack on the test database ---------------------------------------------------------------


class TestDatabaseStack(Stack):
    """A stack on pytest-django's test database and this process's Redis database (``CRUCIBLE_ENV=test``).

    The subprocesses inherit this process's environment (``REDIS_URL``, ``TEST_REDIS_DB_BASE``,
    ``PYTEST_XDIST_WORKER``), so ``crucible/settings.py`` offsets the Redis database exactly as here.
    In test mode settings label containers ``<CRUCIBLE_INSTANCE>-test-<xdist worker>-<pid>``; a work
    horse is forked from its worker, so the pid is the worker's.
    """

    __test__ = False  # a helper, not a test class

    def __init__(self, database_name: str, log_dir: Path, workers: int = 1, sessions: int = 0):
        import django_rq
        from django.conf import settings

        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "crucible.settings",
                "CRUCIBLE_ENV": "test",
                "DATABASE_URL": urlunparse(urlparse(settings.DATABASE_URL)._replace(path="/" + database_name)),
                # No kept connections, so the test database can be dropped soon after the stack stops.
                "DATABASE_CONN_MAX_AGE": "0",
            }
        )
        super().__init__(
            env,
            log_dir,
            workers=workers,
            sessions=sessions,
            name="live-stack",
            rq_connection=lambda: django_rq.get_connection("default"),
        )
        self.database_name = database_name

    @property
    def worker_name(self) -> str:
        """The first worker's RQ name (what the monitoring page lists)."""
        return self.worker_names["worker0"]

    def instances(self) -> list[str]:
        base = self.env.get("CRUCIBLE_INSTANCE", "crucible")
        xdist = self.env.get("PYTEST_XDIST_WORKER", "main")
        return [
            f"{base}-test-{xdist}-{process.pid}"
            for name, process in self.processes.items()
            if "worker" in name or name.startswith("sessions")
        ]

    def stop(self) -> None:
        super().stop()
        from django.conf import settings

        self.remove_containers(settings.DOCKER_HOST)

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until the stack's queues are empty and its workers idle (twice in a row, 0.2 s apart).

        The stack outlives a test (it is module-scoped) and a transactional test ends by emptying the
        tables with one TRUNCATE: a worker still finishing a run the test left would deadlock with it
        (its UPDATE holds one table while TRUNCATE waits for it holding the next) and the flush would
        fail, leaving the test's rows to the next test. Rows a test made without a job are no concern:
        no worker touches them.
        """
        wait_until(self._settled, timeout, what="the live stack's workers to be idle")

    def _settled(self) -> bool:
        """Idle now and 0.2 s later: a job just taken off a queue may not have marked its worker busy yet."""
        if not self._idle():
            return False
        time.sleep(0.2)
        return self._idle()

    def _idle(self) -> bool:
        from django.conf import settings

        from apps.evaluations import fleet
        from crucible import redis_clients

        if any(redis_clients.rq_queue(name).count for name in settings.RQ_QUEUES):
            return False
        ours = set(self.worker_names.values())
        return all(worker.state == "idle" for worker in fleet.workers() if worker.name in ours)


@pytest.fixture(scope="module")
def live_stack(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[TestDatabaseStack]:
    """Daphne + one worker on the test database; yields the stack (``.url``, ``.ws_url``, ``.logs()``)."""
    from django.db import connection

    stack = TestDatabaseStack(connection.settings_dict["NAME"], tmp_path_factory.mktemp("live-stack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


# --- a stack on the development services (benchmarks) -------------------------------------------


@contextlib.contextmanager
def development_stack(
    port: int | None = None,
    workers: int = 2,
    cron: bool = False,
    sessions: int = 0,
    web_processes: int = 1,
    **settings: str,
):
    """Daphne + workers (+ reconciler) on the development database and Redis; yields the stack.

    ``settings`` are extra environment variables (e.g. ``QUEUE_CAPACITY="25"``). Logs go to data/logs/.
    """
    import django_rq

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "crucible.settings", **settings}
    stack = Stack(
        env,
        ROOT / "data" / "logs" / "bench",
        workers=workers,
        cron=cron,
        sessions=sessions,
        web_processes=web_processes,
        port=port,
        name=f"bench-{os.getpid()}",
        rq_connection=lambda: django_rq.get_connection("default"),
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


# --- private services (the fault suite) ----------------------------------------------------------


class PrivatePostgres:
    """A throwaway cluster (initdb/pg_ctl as ``postgres``) on a free port; ``restart()`` cuts every connection."""

    def __init__(self, base: Path, also_listen: tuple[str, ...] = ()):
        """``also_listen``: (address, network) pairs beside 127.0.0.1 that may connect (another host's veth)."""
        self.dir = base / "pg"
        self.port = free_port()
        self.user = "crucible"
        self.name = "crucible"
        self.also_listen = also_listen

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        return f"postgres://{self.user}@{address}:{self.port}/{self.name}"

    def _as_postgres(self, *argv, check=True, timeout=120):
        pw = pwd.getpwnam("postgres")

        def demote():
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        return subprocess.run(
            [str(a) for a in argv],
            preexec_fn=demote if os.getuid() == 0 else None,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/tmp",
        )

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chown(self.dir.parent, pw.pw_uid, pw.pw_gid)
        self._as_postgres(PG_BIN / "initdb", "-D", self.dir / "data", "-U", self.user, "--auth=trust", "-E", "UTF8")
        with open(self.dir / "data" / "pg_hba.conf", "a") as hba:
            for _address, network in self.also_listen:
                hba.write(f"host all all {network} trust\n")
        self._pg_ctl("start")
        self._as_postgres(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", self.user, self.name)

    def _pg_ctl(self, action: str, *extra) -> None:
        listen = ",".join(["127.0.0.1", *(address for address, _ in self.also_listen)])
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={listen} -c fsync=off -c max_connections=200"
        self._as_postgres(
            PG_BIN / "pg_ctl", action, "-D", self.dir / "data", "-o", options, "-l", self.dir / "pg.log", "-w", *extra
        )

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (fast: every connection is cut), stay down ``down_s``, start again."""
        self._pg_ctl("stop", "-m", "fast")
        time.sleep(down_s)
        self._pg_ctl("start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._as_postgres(PG_BIN / "pg_ctl", "stop", "-D", self.dir / "data", "-m", "immediate", check=False)

    def connect(self):
        import psycopg

        return psycopg.connect(self.url.replace("postgres://", "postgresql://"), autocommit=True)


class PrivateRedis:
    """``redis-server`` without persistence on a free port; ``restart(flush=True)`` loses every key."""

    def __init__(self, base: Path, also_listen: tuple[str, ...] = ()):
        """``also_listen``: addresses beside 127.0.0.1 to bind (another host's veth)."""
        self.dir = base / "redis"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.also_listen = also_listen

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            # No password on a private test server: protected mode would refuse the other host's veth.
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *self.also_listen]
            + ["--protected-mode", "no" if self.also_listen else "yes", "--save", "", "--appendonly", "no"],
            cwd=self.dir,
            stdout=open(self.dir / "redis.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ping, 10, what="redis")

    def ping(self) -> bool:
        return self.client().ping()

    def restart(self, flush: bool = True, down_s: float = 0.0) -> None:
        if flush:
            with contextlib.suppress(Exception):
                self.client().flushall()
        self.stop()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def running_private_services(base: Path, netns: NetworkNamespace | None = None):
    """A private PostgreSQL cluster and Redis under ``base``, stopped (also on failure) at the end.

    With ``netns`` they also listen on its veth pair's host end, for processes inside it (another host)."""
    pairs = ((netns.host_address, netns.network),) if netns else ()
    db, redis = PrivatePostgres(base, pairs), PrivateRedis(base, tuple(a for a, _ in pairs))
    try:
        db.start()
        redis.start()
        yield db, redis
    finally:
        redis.stop()
        db.stop()


class NetworkNamespace:
    """A named network namespace joined to this one by a veth pair: "another host" on this machine.

    The host end gets ``host_address``, the namespace's end ``address`` (a /30 of 10.213.0.0/16);
    services that must be reachable from inside listen on ``host_address``. Processes enter it with
    ``nsenter --net=/var/run/netns/NAME`` (``ip netns exec`` would remount /sys, and a Docker engine
    started that way finds no cgroups)."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.name = f"crucible-{tag}"
        self.host_veth, self.ns_veth = f"cv{tag}h", f"cv{tag}n"
        subnet = int(tag[:4], 16) % 16384  # a /30 in 10.213.0.0/16
        base = (10 << 24) | (213 << 16) | (subnet << 2)
        self.network = f"{_ip(base)}/30"
        self.host_address, self.address = _ip(base + 1), _ip(base + 2)

    def enter(self) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.name}"]

    def create(self) -> NetworkNamespace:
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.ns_veth],
            ["ip", "link", "set", self.ns_veth, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_veth],
            ["ip", "link", "set", self.host_veth, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.ns_veth],
            ["ip", "-n", self.name, "link", "set", self.ns_veth, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ]
        for argv in steps:
            subprocess.run(argv, check=True, capture_output=True, text=True)
        return self

    def delete(self) -> None:
        """Remove the namespace (its end of the pair goes with it, and so the host's end)."""
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def _ip(value: int) -> str:
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


class PrivateDocker:
    """A second ``dockerd`` with its own data root and socket, in its own network namespace.

    ``restart()`` stops the engine (its containers die with it) and starts it again.
    """

    def __init__(self, config: dict | None = None, netns: NetworkNamespace | None = None):
        """``config``: the engine's daemon.json (default: the host's, with its runtimes). ``netns``: run
        the engine in that named namespace (another host's) instead of a new anonymous one."""
        # Unix socket paths are limited to 108 bytes: keep this one short.
        self.dir = Path(tempfile.mkdtemp(prefix="cfd-"))
        self.sock = self.dir / "docker.sock"
        self.process: subprocess.Popen | None = None
        self.config = config
        self.netns = netns

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        # `unshare --net`: a dockerd started with --bridge=none in the host's namespace deletes the
        # host's docker0 interface, which would break the shared engine's networking for everyone else.
        argv = [
            *(self.netns.enter() if self.netns else ["unshare", "--net"]),
            "dockerd",
            "--data-root",
            str(self.dir / "data"),
            "--exec-root",
            str(self.dir / "exec"),
            "--pidfile",
            str(self.dir / "docker.pid"),
            "-H",
            self.host,
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--shutdown-timeout=1",
        ]
        if self.config is not None:
            (self.dir / "daemon.json").write_text(json.dumps(self.config))
            argv += ["--config-file", str(self.dir / "daemon.json")]
        log = open(self.dir / "dockerd.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(self.ping, 60, what="private dockerd")

    def ping(self) -> bool:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=5).ping()

    def load_image(self, image: str) -> None:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, check=True, capture_output=True)
        save.wait(120)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL the engine and its containerd (the host died): its containers' shims live on."""
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def cleanup(self) -> None:
        """Remove every container, stop the engine and delete its data."""
        with contextlib.suppress(Exception):
            import docker

            client = docker.DockerClient(base_url=self.host, timeout=10)
            for container in client.containers.list(all=True):
                container.remove(force=True)
        self.stop()
        subprocess.run(["umount", "-R", str(self.dir / "exec")], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# Reliability settings for a stack under fault injection: the reconciler every 2 s, a worker lost
# after 6 s without a heartbeat (heartbeat every 1 s).
FAULT_SETTINGS = {
    "RECONCILE_INTERVAL_S": "2",
    "WORKER_LOST_AFTER_S": "6",
    "WORKER_HEARTBEAT_S": "1",
    "WORKER_DB_RETRY_S": "60",
    "EVALUATION_MAX_ATTEMPTS": "2",
}


class PrivateStack(Stack):
    """web + workers + the reconciler on private services, with a unique CRUCIBLE_INSTANCE.

    Runs with ``CRUCIBLE_ENV=development``: in ``test`` mode settings add the process id to
    CRUCIBLE_INSTANCE (per-process labels), which would hide the workers' containers from the reconciler.
    """

    def __init__(
        self, base: Path, db: PrivatePostgres, redis: PrivateRedis, docker_host: str, workers: int = 2
    ) -> None:
        self.db = db
        self.redis = redis
        self.docker_host = docker_host
        self.instance = f"faults-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "crucible.settings",
                "CRUCIBLE_ENV": "development",
                "CRUCIBLE_INSTANCE": self.instance,
                "DATABASE_URL": db.url,
                "DATABASE_CONN_MAX_AGE": "0",
                "REDIS_URL": redis.url,
                "DOCKER_HOST": docker_host,
                "SECRET_KEY": "faults-" + "x" * 50,
                "QUEUE_CAPACITY": "1000",
                **FAULT_SETTINGS,
            }
        )
        super().__init__(env, base / "logs", workers=workers, cron=True, name=self.instance, rq_connection=redis.client)
        self.token = ""

    def prepare(self) -> None:
        """Migrate the private database, create the API user with a lifted quota."""
        self.manage("migrate", "--noinput", timeout=600)
        self.token = api_token("faults", "faults", env=self.env)
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from apps.accounts.models import Quota; "
            "u = get_user_model().objects.get(username='faults'); "
            "Quota.objects.update_or_create(user=u, defaults={'submissions_per_minute': 100000, 'max_active': 100000})",
        )

    def start(self, supervise: bool = True) -> PrivateStack:
        return super().start(supervise=supervise)

    # --- API and checks ---------------------------------------------------------------------
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        return session

    def submit(self, code: str, **fields) -> str:
        response = self.session().post(self.url + "/api/v1/evaluations/", json={"code": code, **fields}, timeout=10)
        assert response.status_code == 201, (response.status_code, response.text)
        return response.json()["id"]

    def row(self, evaluation_id: str) -> dict:
        columns = ("status", "attempts", "worker", "error", "exit_code", "control", "heartbeat_at")
        with self.db.connect() as conn:
            cur = conn.execute(
                f"select {', '.join(columns)} from evaluations_evaluation where id = %s",  # noqa: S608 (fixed names)
                (evaluation_id,),
            )
            return dict(zip(columns, cur.fetchone(), strict=True))

    def chunks(self, evaluation_id: str) -> list[tuple[int, str, bytes]]:
        with self.db.connect() as conn:
            cur = conn.execute(
                "select seq, stream, data from evaluations_outputchunk where evaluation_id = %s order by seq",
                (evaluation_id,),
            )
            return [(seq, stream, bytes(data)) for seq, stream, data in cur.fetchall()]

    def audit(self, evaluation_id: str) -> list[tuple[str, dict, object]]:
        with self.db.connect() as conn:
            cur = conn.execute(
                "select action, details, created_at from monitoring_auditevent where target = %s order by id",
                (str(evaluation_id),),
            )
            return cur.fetchall()

    def wait_status(self, evaluation_id: str, statuses, timeout: float = 60) -> dict:
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)
        return wait_until(
            lambda: (r := self.row(evaluation_id))["status"] in statuses and r,
            timeout,
            interval=0.1,
            what=f"{evaluation_id} in {statuses}",
        )

    def wait_terminal(self, evaluation_id: str, timeout: float = 90) -> dict:
        return self.wait_status(evaluation_id, TERMINAL, timeout)

    def containers(self) -> list:
        import docker

        client = docker.DockerClient(base_url=self.docker_host, timeout=10)
        return client.containers.list(all=True, filters={"label": f"{INSTANCE_LABEL}={self.instance}"})

    def remove_containers(self, docker_host: str | None = None) -> None:
        super().remove_containers(docker_host or self.docker_host)


@pytest.fixture(scope="module")
def live_sessions_stack(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[TestDatabaseStack]:
    """Daphne + one session host (``manage.py crucible_sessions``), no worker, on the test database."""
    from django.db import connection

    stack = TestDatabaseStack(
        connection.settings_dict["NAME"], tmp_path_factory.mktemp("live-sessions"), workers=0, sessions=1
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
