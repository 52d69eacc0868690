"""The platform image: built with no registry by `make image`'s script, its roles run Crucible.

The test builds the image exactly as an operator does (deploy/build_image.py, which `make image`
runs; a second build reuses what the first made) and starts its roles as compose.yaml does
(read-only, no capabilities, secrets from files), with the host's network so they reach the test
PostgreSQL and this process's Redis database on 127.0.0.1. Nothing is skipped: an image that cannot
build fails the test.

The web container deliberately has no Docker engine socket (compose.yaml gives it only to workers,
the session host and the reconciler), so its readiness report says ``docker: failing``: that is
asserted, because it is the layout's promise. The worker, session-host and reconciler containers get
the socket and its group, as compose.yaml gives them, and do real work through the host's engine.
compose.yaml itself cannot be started here (no `docker compose`, no registry for PostgreSQL and
Redis images): its layout is checked by parsing it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import requests

from tests.stack import INSTANCE_LABEL, PYTHON, ROOT, free_port, wait_until

pytestmark = [pytest.mark.timeout(3600)]

TEST_TAG = "crucible:platform-image-test"
PLATFORM_UID = 10100  # the Dockerfile's `crucible` user
STATIC_FILE = "css/crucible.css"
DOCKER_SOCKET = "/var/run/docker.sock"


def docker(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv[:3])} failed: {result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def platform_image() -> str:
    """The image, built (or reused when unchanged) by the script `make image` runs."""
    build = subprocess.run(
        [PYTHON, "deploy/build_image.py", "--tag", TEST_TAG],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert build.returncode == 0, f"the platform image did not build:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    assert build.stdout.strip().splitlines()[-1] == TEST_TAG
    return TEST_TAG


class Role:
    """One role of the platform image running in a container; ``url`` is set for web."""

    def __init__(self, name: str, url: str = ""):
        self.name, self.url = name, url


@pytest.fixture(scope="module")
def role_arguments(django_db_setup, tmp_path_factory) -> list[str]:
    """`docker run` arguments every role gets, as compose.yaml gives them: read-only, no capabilities,
    secrets from files (pytest-django's test database, this process's Redis database), host network."""
    from django.conf import settings
    from django.db import connection

    secrets = tmp_path_factory.mktemp("secrets")
    secret_values = {
        "database_url": urlunparse(
            urlparse(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"])
        ),
        # settings already moved this process's REDIS_URL to its own test database; the container runs
        # in production mode, which uses the URL as given.
        "redis_url": settings.REDIS_URL,
        "secret_key": "platform-image-test-" + uuid.uuid4().hex,
    }
    mounts = []
    for secret, value in secret_values.items():
        (secrets / secret).write_text(value + "\n")
        (secrets / secret).chmod(0o444)  # as deploy/make_secrets.sh leaves them
        mounts += ["--volume", f"{secrets / secret}:/run/secrets/{secret}:ro"]
    environment = {
        "SECRET_KEY_FILE": "/run/secrets/secret_key",
        "DATABASE_URL_FILE": "/run/secrets/database_url",
        "REDIS_URL_FILE": "/run/secrets/redis_url",
        "DATABASE_CONN_MAX_AGE": "0",  # no kept connections: the test database is dropped at the end
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_HTTPS": "false",
        "CRUCIBLE_INSTANCE": f"crucible-image-test-{uuid.uuid4().hex[:8]}",
        "SANDBOX_POOL_SIZE": "0",  # no warm sandbox outlives the worker's container
    }
    env_args = [arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")]
    hardening = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]
    return ["--network", "host", *hardening, *mounts, *env_args]


@contextlib.contextmanager
def running_role(image: str, role: str, arguments: list[str], url: str = ""):
    """Run ``role`` from ``image`` detached; stop it (SIGTERM, as compose does) and remove it, always."""
    name = f"crucible-image-test-{role}-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, *arguments, image, role)
    try:
        yield Role(name, url)
    finally:
        docker("stop", "--time", "30", name, check=False, timeout=60)
        logs = docker("logs", "--tail", "50", name, check=False)
        docker("rm", "--force", name, check=False)
        print(f"--- {role} ---", logs.stdout, logs.stderr)


@pytest.fixture(scope="module")
def web_container(platform_image, role_arguments):
    """The web role on a free port; the image's own HEALTHCHECK polled every second, not every 30 s."""
    port = free_port()
    extra = ["--env", "BIND=127.0.0.1", "--env", f"PORT={port}", "--health-interval", "1s"]
    with running_role(platform_image, "web", [*role_arguments, *extra], f"http://127.0.0.1:{port}") as web:
        yield web


@pytest.fixture(scope="module")
def worker_container(platform_image, role_arguments):
    """A worker role as compose.yaml runs it: the host engine's socket mounted, its group added."""
    socket_group = str(Path(DOCKER_SOCKET).stat().st_gid)
    extra = ["--volume", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}", "--group-add", socket_group, "--no-healthcheck"]
    with running_role(platform_image, "worker", [*role_arguments, *extra]) as worker:
        yield worker
    remove_sandboxes_left(role_arguments, "worker")


@pytest.fixture(scope="module")
def sessions_container(platform_image, role_arguments):
    """A session host role as compose.yaml runs it: the host engine's socket mounted, its group added."""
    socket_group = str(Path(DOCKER_SOCKET).stat().st_gid)
    extra = ["--volume", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}", "--group-add", socket_group, "--no-healthcheck"]
    with running_role(platform_image, "sessions", [*role_arguments, *extra]) as host:
        yield host
    remove_sandboxes_left(role_arguments, "session host")


@pytest.fixture(scope="module")
def reconciler_container(platform_image, role_arguments):
    """The reconciler role as compose.yaml runs it: the host engine's socket mounted, its group added."""
    socket_group = str(Path(DOCKER_SOCKET).stat().st_gid)
    extra = ["--volume", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}", "--group-add", socket_group, "--no-healthcheck"]
    with running_role(platform_image, "reconciler", [*role_arguments, *extra]) as reconciler:
        yield reconciler


def instance_of(role_arguments: list[str]) -> str:
    """The CRUCIBLE_INSTANCE the roles of this module run as (their sandboxes carry it as a label)."""
    return next(arg for arg in role_arguments if arg.startswith("CRUCIBLE_INSTANCE=")).split("=", 1)[1]


def remove_sandboxes_left(role_arguments: list[str], role: str) -> None:
    """Remove any sandbox of this test's instance that a stopped role left behind, and fail if there was one."""
    instance = instance_of(role_arguments)
    leftovers = docker("ps", "--all", "--quiet", "--filter", f"label={INSTANCE_LABEL}={instance}").stdout.split()
    if leftovers:
        docker("rm", "--force", *leftovers, check=False)
    assert not leftovers, f"the {role} left sandboxes behind"


def live(url: str) -> bool:
    return requests.get(url + "/api/v1/health/live/", timeout=5).status_code == 200


def health_state(name: str) -> str:
    return json.loads(docker("inspect", "--format", "{{json .State.Health.Status}}", name).stdout)


def test_the_web_role_from_the_image_is_live_and_reaches_postgresql_and_redis(web_container):
    wait_until(lambda: live(web_container.url), timeout=120, interval=0.5, what="the web role to answer")

    readiness = requests.get(web_container.url + "/api/v1/health/", timeout=30)
    checks = readiness.json()["checks"]
    assert checks["database"] == "ok", readiness.text
    assert checks["redis"] == "ok", readiness.text
    # The web role holds no Docker socket: it cannot reach the engine itself, so its engine checks come
    # from the live workers' reports, and without a live worker it is not ready.
    if checks["workers"] == "failing":
        assert checks["docker"] == "failing", readiness.text
        assert readiness.status_code == 503
    else:
        assert checks["docker"] == "ok", readiness.text

    # Docker's own health check (the image's HEALTHCHECK, on liveness) agrees.
    assert wait_until(lambda: health_state(web_container.name) == "healthy", timeout=120, what="healthy")


def test_the_web_role_runs_as_the_unprivileged_crucible_user(web_container):
    wait_until(lambda: live(web_container.url), timeout=120, interval=0.5, what="the web role to answer")

    status = docker("exec", web_container.name, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(PLATFORM_UID)] * 4
    assert docker("inspect", "--format", "{{.Config.User}}", web_container.name).stdout.strip() == "crucible:crucible"


def test_the_static_files_collected_at_build_are_served(web_container):
    wait_until(lambda: live(web_container.url), timeout=120, interval=0.5, what="the web role to answer")

    original = (Path(ROOT) / "static" / STATIC_FILE).read_bytes()
    plain = requests.get(f"{web_container.url}/static/{STATIC_FILE}", timeout=10)
    assert plain.status_code == 200
    assert plain.content == original

    # collectstatic ran at build: the manifest names the hashed copy, which is served too, compressed on request.
    manifest = json.loads(docker("exec", web_container.name, "cat", "/var/lib/crucible/static/staticfiles.json").stdout)
    hashed = manifest["paths"][STATIC_FILE]
    assert hashed != STATIC_FILE
    compressed = requests.get(f"{web_container.url}/static/{hashed}", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert compressed.status_code == 200
    assert compressed.headers.get("Content-Encoding") == "gzip"
    assert compressed.content == original  # requests decodes it


@pytest.mark.django_db(transaction=True)
def test_a_worker_from_the_image_runs_alices_evaluation_on_the_hosts_engine(web_container, worker_container, alice):
    """The engine reached as compose.yaml gives it (socket + group, no root): the run succeeds on the host's
    sandbox image; web itself still has no engine but reports the worker's."""
    from django.conf import settings

    from apps.accounts.models import ApiToken

    wait_until(lambda: live(web_container.url), timeout=120, interval=0.5, what="the web role to answer")
    http = requests.Session()
    http.headers["Authorization"] = f"Token {ApiToken.issue(alice, 'image')[1]}"

    submitted = http.post(web_container.url + "/api/v1/evaluations/", json={"code": "print(6 * 7)"}, timeout=30)
    assert submitted.status_code == 201, submitted.text
    url = f"{web_container.url}/api/v1/evaluations/{submitted.json()['id']}/"
    done = wait_until(
        lambda: (body := http.get(url, timeout=10).json())["status"] not in ("queued", "running") and body,
        timeout=300,
        what="alice's run to end",
    )
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0
    assert done["output_bytes"] == len("42\n")
    sandbox_image = docker("image", "inspect", "--format", "{{.Id}}", settings.SANDBOX_IMAGE).stdout.strip()
    assert done["image_digest"] == sandbox_image

    # Web still has no engine of its own, yet it is ready: the engines are what the live workers report.
    readiness = requests.get(web_container.url + "/api/v1/health/", timeout=30)
    assert readiness.json()["checks"] == dict.fromkeys(
        ("database", "redis", "docker", "sandbox_image", "sandbox_runtime", "workers"), "ok"
    ), readiness.text
    assert readiness.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_session_host_from_the_image_serves_bobs_agent_sandbox(web_container, sessions_container, bob):
    """The session host reaches the engine as compose.yaml lets it; bob's session runs a command and ends."""
    from apps.accounts.models import ApiToken

    wait_until(lambda: live(web_container.url), timeout=120, interval=0.5, what="the web role to answer")
    http = requests.Session()
    http.headers["Authorization"] = f"Token {ApiToken.issue(bob, 'image')[1]}"
    sandboxes = web_container.url + "/api/v1/sandboxes/"

    created = wait_until(
        lambda: (
            (response := http.post(sandboxes, json={"language": "python"}, timeout=60)).status_code != 503 and response
        ),
        timeout=120,
        what="a session host to take sessions",
    )
    assert created.status_code == 201, created.text
    url = f"{sandboxes}{created.json()['id']}/"
    session = wait_until(
        lambda: (body := http.get(url, timeout=10).json())["status"] != "starting" and body,
        timeout=180,
        what="bob's sandbox to be ready",
    )
    assert session["status"] == "ready", session

    result = http.post(url + "exec/", json={"cmd": ["python3", "-c", "print(6 * 7)"]}, timeout=120)
    assert result.status_code == 200, result.text
    assert result.json()["returncode"] == 0, result.text
    assert result.json()["stdout"] == "42\n"

    assert http.delete(url, timeout=60).status_code == 202
    ended = wait_until(lambda: (body := http.get(url, timeout=10).json())["status"] == "ended" and body, timeout=120)
    assert ended["end_reason"] == "deleted"


def test_the_reconciler_from_the_image_removes_a_container_left_by_a_run_that_is_not_running(
    role_arguments, reconciler_container
):
    """A container of this instance named for a run that does not exist is an orphan: the reconciler,
    reaching the engine as compose.yaml lets it, removes it."""
    from django.conf import settings

    orphan = f"crucible-{uuid.uuid4()}"
    label = f"{INSTANCE_LABEL}={instance_of(role_arguments)}"
    docker("create", "--name", orphan, "--label", label, "--network", "none", settings.SANDBOX_IMAGE, "true")
    try:
        wait_until(
            lambda: docker("container", "inspect", orphan, check=False).returncode != 0,
            timeout=120,
            what="the reconciler to remove the orphan container",
        )
    finally:
        docker("rm", "--force", orphan, check=False)


# --- compose.yaml: what can be checked without `docker compose` ----------------------------------

PLATFORM_ROLES = {"migrate", "web", "worker", "sessions", "reconciler"}
ENGINE_ROLES = {"worker", "sessions", "reconciler"}


@pytest.fixture(scope="module")
def compose() -> dict:
    import yaml

    return yaml.safe_load((Path(ROOT) / "compose.yaml").read_text())


def test_every_platform_role_in_compose_runs_the_platform_image_hardened(compose):
    services = compose["services"]
    assert PLATFORM_ROLES <= set(services)
    entrypoint = (Path(ROOT) / "deploy" / "entrypoint.sh").read_text()
    for role in PLATFORM_ROLES:
        service = services[role]
        assert service["image"] == "${CRUCIBLE_IMAGE:-crucible:latest}", role
        assert service["command"] == [role], role
        assert f"  {role})" in entrypoint, f"deploy/entrypoint.sh has no {role} role"
        assert service["read_only"] is True, role
        assert service["cap_drop"] == ["ALL"], role
        assert "no-new-privileges:true" in service["security_opt"], role


def test_only_the_roles_that_drive_sandboxes_get_the_docker_engine(compose):
    services = compose["services"]
    for name, service in services.items():
        mounts = [volume.split(":")[0] for volume in service.get("volumes", [])]
        if name in ENGINE_ROLES:
            assert mounts == [DOCKER_SOCKET], name
            assert service["group_add"], name
        else:
            assert DOCKER_SOCKET not in mounts, f"{name} must not reach the engine"
            assert "group_add" not in service, name


def test_compose_secrets_come_from_files_that_make_secrets_writes(compose, tmp_path):
    secrets_dir = tmp_path / "secrets"
    subprocess.run(["sh", str(Path(ROOT) / "deploy" / "make_secrets.sh"), str(secrets_dir)], check=True, timeout=60)
    written = {path.name: path.read_text() for path in secrets_dir.iterdir()}

    declared = compose["secrets"]
    for name, secret in declared.items():
        assert secret["file"] == f"./deploy/secrets/{name}"
        assert name in written, f"deploy/make_secrets.sh does not write {name}"
        assert (secrets_dir / name).stat().st_mode & 0o777 == 0o444
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    postgres_password = written["postgres_password"].strip()
    assert written["database_url"].strip() == f"postgres://crucible:{postgres_password}@postgres:5432/crucible"
    assert written["redis_url"].strip() == f"redis://:{written['redis_password'].strip()}@redis:6379/0"

    # The platform reads its secrets from those files, never from values in the compose file.
    for role in PLATFORM_ROLES:
        environment = compose["services"][role]["environment"]
        for variable in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
            assert variable not in environment, role
            assert environment[f"{variable}_FILE"] == f"/run/secrets/{variable.lower()}", role
        assert set(compose["services"][role]["secrets"]) == {"secret_key", "database_url", "redis_url"}, role
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "/run/secrets/redis_password" in " ".join(compose["services"]["redis"]["entrypoint"])

    # Running it again keeps every secret as it was (rotating one is deliberate).
    subprocess.run(["sh", str(Path(ROOT) / "deploy" / "make_secrets.sh"), str(secrets_dir)], check=True, timeout=60)
    assert {path.name: path.read_text() for path in secrets_dir.iterdir()} == written


def test_postgresql_and_redis_are_reachable_only_inside_the_backend_network(compose):
    services = compose["services"]
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("postgres", "redis"):
        assert services[name]["networks"] == ["backend"], name
        assert "ports" not in services[name], name
        assert services[name]["volumes"], f"{name} keeps its data in a volume"
    # Only web publishes a port, and only on the host's loopback (a TLS proxy goes in front).
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert list(published) == ["web"]
    assert all(port.startswith("127.0.0.1:") for port in published["web"])
