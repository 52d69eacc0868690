"""A private Crucible stack for fault injection: its own PostgreSQL cluster, Redis and (optionally)
Docker engine, plus web, workers and the reconciler as subprocesses.

Nothing here touches the shared services (PostgreSQL 5432, Redis 6379, the system Docker engine):
other engineers and the parallel test suite use them while this suite restarts and flushes its own.

* ``PrivatePostgres``: a throwaway cluster (initdb/pg_ctl as the ``postgres`` user) in a temp dir on
  a free port; ``restart()`` is ``pg_ctl restart -m fast`` (every connection is cut).
* ``PrivateRedis``: ``redis-server`` without persistence on a free port; ``restart(flush=True)``
  kills it and starts an empty one (Redis lost its data).
* ``PrivateDocker``: a second ``dockerd`` with its own data root and socket, no networking, the
  sandbox image loaded into it; ``restart()`` stops the engine (its containers die) and starts it.
* ``Stack``: daphne, N ``CrucibleWorker`` processes and ``python -m crucible.cron`` started with the
  Procfile's commands, pointed at the private services through DATABASE_URL/REDIS_URL/DOCKER_HOST,
  with a unique CRUCIBLE_INSTANCE and short reliability settings. Dead workers are restarted by a
  small supervisor thread (what systemd's ``Restart=always`` would do), unless a test says not to.

The stack runs with ``CRUCIBLE_ENV=development``: in ``test`` mode settings add the process id to
CRUCIBLE_INSTANCE (per-process labels), which would hide the workers' containers from the reconciler.
"""

from __future__ import annotations

import contextlib
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
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TERMINAL = {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}

# Reliability settings for the stack under test: the reconciler every 2 s, a worker lost after 6 s
# without a heartbeat (heartbeat every 1 s).
STACK_SETTINGS = {
    "RECONCILE_INTERVAL_S": "2",
    "WORKER_LOST_AFTER_S": "6",
    "WORKER_HEARTBEAT_S": "1",
    "WORKER_DB_RETRY_S": "60",
    "EVALUATION_MAX_ATTEMPTS": "2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
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


class PrivatePostgres:
    def __init__(self, base: Path):
        self.dir = base / "pg"
        self.port = free_port()
        self.user = "crucible"
        self.name = "crucible"

    @property
    def url(self) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{self.name}"

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
        self._pg_ctl("start")
        self._as_postgres(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", self.user, self.name)

    def _pg_ctl(self, action: str, *extra) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
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
        return psycopg.connect(self.url.replace("postgres://", "postgresql://"), autocommit=True)


class PrivateRedis:
    def __init__(self, base: Path):
        self.dir = base / "redis"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.dir,
            stdout=open(self.dir / "redis.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ping, 10, what="redis")

    def ping(self) -> bool:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=1).ping()

    def restart(self, flush: bool = True, down_s: float = 0.0) -> None:
        if flush:
            import redis

            with contextlib.suppress(Exception):
                redis.Redis.from_url(self.url).flushall()
        self.stop()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def running_private_services(base: Path):
    """A private PostgreSQL cluster and Redis under ``base``, stopped (also on failure) at the end."""
    db, redis = PrivatePostgres(base), PrivateRedis(base)
    try:
        db.start()
        redis.start()
        yield db, redis
    finally:
        redis.stop()
        db.stop()


class PrivateDocker:
    def __init__(self, base: Path):
        # Unix socket paths are limited to 108 bytes: keep this one short.
        self.dir = Path(tempfile.mkdtemp(prefix="cfd-"))
        self.sock = self.dir / "docker.sock"
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        # In a network namespace of its own: a dockerd started with --bridge=none deletes the host's
        # docker0 interface, which would break the shared engine's networking for everyone else.
        argv = [
            "unshare",
            "--net",
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
        self.process = subprocess.Popen(
            argv, stdout=open(self.dir / "dockerd.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True
        )  # noqa: SIM115
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

    def cleanup(self) -> None:
        """Remove every container, stop the engine and delete its data."""
        with contextlib.suppress(Exception):
            import docker

            client = docker.DockerClient(base_url=self.host, timeout=10)
            for c in client.containers.list(all=True):
                c.remove(force=True)
        self.stop()
        subprocess.run(["umount", "-R", str(self.dir / "exec")], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Stack:
    """web + workers + reconciler against private services; ``url`` is the API base URL."""

    def __init__(self, base: Path, db: PrivatePostgres, redis: PrivateRedis, docker_host: str, workers: int = 2):
        self.base = base
        self.db = db
        self.redis = redis
        self.docker_host = docker_host
        self.n_workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance = f"faults-{uuid.uuid4().hex[:8]}"
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.worker_names: dict[str, str] = {}
        self.supervise = True
        self._stop_supervisor = threading.Event()
        self._lock = threading.RLock()
        self.token = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "crucible.settings",
                "CRUCIBLE_ENV": "development",
                "CRUCIBLE_INSTANCE": self.instance,
                "DATABASE_URL": self.db.url,
                "DATABASE_CONN_MAX_AGE": "0",
                "REDIS_URL": self.redis.url,
                "DOCKER_HOST": self.docker_host,
                "PYTHONUNBUFFERED": "1",
                "SECRET_KEY": "faults-" + "x" * 50,
                "QUEUE_CAPACITY": "1000",
                **STACK_SETTINGS,
            }
        )
        return env

    def manage(self, *argv, timeout=300) -> str:
        out = subprocess.run(
            [PYTHON, "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if out.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def prepare(self) -> None:
        """Migrate the private database, create the API user with a lifted quota."""
        self.manage("migrate", "--noinput", timeout=600)
        self.token = self.manage("create_api_token", "faults").strip().splitlines()[-1]
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from apps.accounts.models import Quota; "
            "u = get_user_model().objects.get(username='faults'); "
            "Quota.objects.update_or_create(user=u, defaults={'submissions_per_minute': 100000, 'max_active': 100000})",
        )

    # --- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def start_web(self) -> None:
        self._spawn(
            "web", [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "crucible.asgi:application"]
        )

    def start_worker(self, n: int) -> None:
        name = f"{self.instance}-w{n}-{uuid.uuid4().hex[:4]}"
        self.worker_names[f"worker{n}"] = name
        self._spawn(
            f"worker{n}",
            [PYTHON, "manage.py", "crucible_worker", "--without-scheduler", "--name", name],
        )

    def start_cron(self) -> None:
        self._spawn("cron", [PYTHON, "-m", "crucible.cron"])

    def start(self) -> None:
        self.start_web()
        for n in range(self.n_workers):
            self.start_worker(n)
        self.start_cron()
        wait_until(self._web_up, 60, interval=0.3, what="web")
        threading.Thread(target=self._supervisor, daemon=True).start()

    def _web_up(self) -> bool:
        return requests.get(self.url + "/api/v1/health/", timeout=2).status_code in (200, 503)

    def _supervisor(self) -> None:
        while not self._stop_supervisor.wait(0.5):
            if not self.supervise:
                continue
            with self._lock:
                for n in range(self.n_workers):
                    p = self.processes.get(f"worker{n}")
                    if p is not None and p.poll() is not None:
                        self.start_worker(n)
                p = self.processes.get("cron")
                if p is not None and p.poll() is not None:
                    self.start_cron()

    def horse_pids(self, worker: str) -> list[int]:
        """The work horse(s) forked by a worker process (each in its own process group)."""
        out = subprocess.run(["pgrep", "-P", str(self.processes[worker].pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def worker_for(self, rq_name: str) -> str:
        return next(k for k, v in self.worker_names.items() if v == rq_name)

    def kill_worker(self, worker: str, sig=signal.SIGKILL, with_horse=True) -> None:
        with self._lock:
            process = self.processes[worker]
            horses = self.horse_pids(worker) if with_horse else []
            os.killpg(process.pid, sig)
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)

    def stop(self) -> None:
        self._stop_supervisor.set()
        with self._lock:
            horses = [pid for name in self.processes if name.startswith("worker") for pid in self.horse_pids(name)]
            for process in self.processes.values():
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            for process in self.processes.values():
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    def log_tail(self, n: int = 4000) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    # --- API and checks ---------------------------------------------------------------------
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        return session

    def submit(self, code: str, **fields) -> str:
        def post():
            r = self.session().post(self.url + "/api/v1/evaluations/", json={"code": code, **fields}, timeout=10)
            assert r.status_code == 201, (r.status_code, r.text)
            return r.json()["id"]

        return post()

    def row(self, evaluation_id: str) -> dict:
        with self.db.connect() as conn:
            cur = conn.execute(
                "select status, attempts, worker, error, exit_code, control, heartbeat_at "
                "from evaluations_evaluation where id = %s",
                (evaluation_id,),
            )
            status, attempts, worker, error, exit_code, control, heartbeat_at = cur.fetchone()
        return {
            "status": status,
            "attempts": attempts,
            "worker": worker,
            "error": error,
            "exit_code": exit_code,
            "control": control,
            "heartbeat_at": heartbeat_at,
        }

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
        return client.containers.list(all=True, filters={"label": f"org.crucible.instance={self.instance}"})

    def remove_containers(self) -> None:
        with contextlib.suppress(Exception):
            for container in self.containers():
                container.remove(force=True)
