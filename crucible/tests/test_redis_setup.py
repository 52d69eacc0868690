"""scripts/redis.sh (run by `make run`/`make test`): Redis gets a password, kept in local.env's REDIS_URL.

Each test runs the real script against a real redis-server on a free port of its own, never the
shared one: a fresh machine, an older machine whose Redis runs without a password, a REDIS_URL that
names another Redis, and a Redis that already has another password.
"""

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "redis.sh"
pytestmark = pytest.mark.skipif(not Path("/usr/bin/redis-server").exists(), reason="needs redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(data: Path, port: int) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "REDISCLI_AUTH"}
    return subprocess.run(
        ["bash", str(SCRIPT), str(data)],
        env=dict(env, REDIS_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def client(url: str = "", port: int = 0, timeout: float = 5) -> redis.Redis:
    """A client that fails at once (redis-py retries a refused or unauthenticated connection by default)."""
    if url:
        return redis.Redis.from_url(url, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
    return redis.Redis(port=port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def redis_url(data: Path) -> str:
    return re.search(r"^REDIS_URL=(.*)$", (data / "local.env").read_text(), re.MULTILINE)[1]


def wait_for(url: str) -> redis.Redis:
    connection = client(url)
    for _ in range(40):
        try:
            connection.ping()
            return connection
        except redis.exceptions.ConnectionError:
            time.sleep(0.25)
    raise AssertionError(f"no Redis at {url}")


@pytest.fixture
def machine(tmp_path):
    """A data directory with a local.env, and a port; every Redis started on that port is stopped after."""
    (tmp_path / "local.env").write_text("CRUCIBLE_ENV=development\nSECRET_KEY=s\n")
    (tmp_path / "local.env").chmod(0o600)
    port = free_port()
    yield tmp_path, port
    # Stop the Redis this test started on its own port (by process id; never the shared one).
    found = subprocess.run(["pgrep", "-f", f"^redis-server 127.0.0.1:{port}$"], capture_output=True, text=True)
    for pid in found.stdout.split():
        os.kill(int(pid), 15)


def start_redis(data: Path, port: int, *extra: str) -> None:
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        + ["--appendonly", "no", "--dir", str(data), "--logfile", str(data / "old-redis.log"), *extra],
        check=True,
    )


def test_a_fresh_machine_gets_a_redis_that_needs_the_password_in_local_env(machine):
    data, port = machine
    result = run_script(data, port)
    assert result.returncode == 0, result.stderr
    url = redis_url(data)
    assert re.fullmatch(rf"redis://:[0-9a-f]{{48}}@127\.0\.0\.1:{port}/0", url)
    assert wait_for(url).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(port=port).ping()
    assert oct((data / "local.env").stat().st_mode & 0o777) == "0o600"
    assert "CRUCIBLE_ENV=development" in (data / "local.env").read_text()
    # The password is never on a command line, where ps would show it.
    password = url.split(":")[2].split("@")[0]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert password not in ps


def test_a_second_run_changes_nothing(machine):
    data, port = machine
    run_script(data, port)
    before = (data / "local.env").read_text()
    result = run_script(data, port)
    assert result.returncode == 0, result.stderr
    assert (data / "local.env").read_text() == before
    assert wait_for(redis_url(data)).ping()


def test_an_older_machine_whose_redis_has_no_password_is_upgraded_in_place(machine):
    data, port = machine
    start_redis(data, port)
    old = wait_for(f"redis://127.0.0.1:{port}/3")
    old.set("kept", "yes")
    with (data / "local.env").open("a") as env_file:
        env_file.write(f"REDIS_URL=redis://127.0.0.1:{port}/3\n")
    result = run_script(data, port)
    assert result.returncode == 0, result.stderr
    url = redis_url(data)
    assert url.endswith(f"@127.0.0.1:{port}/3")
    assert wait_for(url).get("kept") == b"yes"  # the same Redis, not a new one
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(port=port).ping()
    assert (data / "local.env").read_text().count("REDIS_URL=") == 1


def test_a_redis_url_naming_another_redis_is_left_alone(machine):
    data, port = machine
    with (data / "local.env").open("a") as env_file:
        env_file.write("REDIS_URL=redis://:theirs@redis.internal:6379/0\n")
    result = run_script(data, port)
    assert result.returncode == 0, result.stderr
    assert redis_url(data) == "redis://:theirs@redis.internal:6379/0"
    with pytest.raises(redis.exceptions.ConnectionError):
        client(port=port, timeout=1).ping()  # nothing was started


def test_a_redis_with_another_password_stops_the_set_up_with_a_message(machine):
    data, port = machine
    subprocess.run(
        ["redis-server", "-", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        + ["--dir", str(data), "--logfile", str(data / "old-redis.log")],
        input="requirepass another-one\n",
        text=True,
        check=True,
    )
    wait_for(f"redis://:another-one@127.0.0.1:{port}/0")
    result = run_script(data, port)
    assert result.returncode == 1
    assert "does not accept the password" in result.stderr
