"""The platform image: built with no registry by `make image`'s script, its web role serves Crucible.

The test builds the image exactly as an operator does (deploy/build_image.py, which `make image`
runs; a second build reuses what the first made), starts the web role from it with the host's network
so it reaches the test PostgreSQL and this process's Redis database on 127.0.0.1, and asks it what an
operator and a load balancer would. Nothing is skipped: an image that cannot build fails the test.

The web container deliberately has no Docker engine socket (compose.yaml gives it only to workers and
the session host), so its readiness report says ``docker: failing``: that is asserted, because it is
the layout's promise. Whether ``workers`` is ok depends on workers registered in this Redis database
by other tests, so it is not asserted.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import requests

from tests.stack import PYTHON, ROOT, free_port, wait_until

pytestmark = [pytest.mark.timeout(3600)]

TEST_TAG = "crucible:platform-image-test"
PLATFORM_UID = 10100  # the Dockerfile's `crucible` user
STATIC_FILE = "css/crucible.css"


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


@pytest.fixture(scope="module")
def web_container(platform_image, django_db_setup):
    """The web role on a free port of the host's network, on pytest-django's test database; removed after."""
    from django.conf import settings
    from django.db import connection

    port = free_port()
    name = f"crucible-image-test-{uuid.uuid4().hex[:8]}"
    database_url = urlunparse(urlparse(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"]))
    environment = {
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "0",  # no kept connections: the test database is dropped at the end
        # settings already moved this process's REDIS_URL to its own test database; the container runs
        # in production mode, which uses the URL as given.
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "platform-image-test-" + uuid.uuid4().hex,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_HTTPS": "false",
        "BIND": "127.0.0.1",
        "PORT": str(port),
        "CRUCIBLE_INSTANCE": name,
    }
    env_args = [arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")]
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--health-interval",
        "1s",  # the image's own HEALTHCHECK command, polled sooner than its 30 s default
        *env_args,
        platform_image,
        "web",
    )
    try:
        yield type("Web", (), {"name": name, "url": f"http://127.0.0.1:{port}"})
    finally:
        logs = docker("logs", "--tail", "50", name, check=False)
        docker("rm", "--force", name, check=False)
        print(logs.stdout, logs.stderr)


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
    # The web role holds no Docker socket: it cannot reach the engine, so it is not ready by itself.
    assert checks["docker"] == "failing", readiness.text
    assert readiness.status_code == 503

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
