"""GET /api/v1/health/: no auth, every dependency named, 503 when any is down, no secrets."""

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
from django.conf import settings
from rq import Worker
from rq.utils import utcformat

from apps.console import health
from apps.evaluations.worker import ENGINE_FIELD
from apps.sandboxing import engine, enginereport
from apps.sandboxing.enginereport import EngineReport

pytestmark = pytest.mark.django_db(transaction=False)

URL = "/api/v1/health/"


def registered_worker():
    """A real RQ worker registration in Redis (the worker loop itself is not needed for health)."""
    import django_rq

    worker = Worker(
        ["default"], connection=django_rq.get_connection("default"), name=f"health-test-{uuid.uuid4().hex[:8]}"
    )
    worker.register_birth()
    worker.heartbeat()
    return worker


@pytest.fixture
def a_live_worker():
    worker = registered_worker()
    yield worker
    worker.register_death()


@pytest.fixture
def another_live_worker():
    worker = registered_worker()
    yield worker
    worker.register_death()


@pytest.fixture
def fresh_docker_client():
    engine._local.__dict__.clear()
    yield
    engine._local.__dict__.clear()


def test_anyone_sees_all_ok_when_every_dependency_is_up(anonymous_api, a_live_worker):
    response = anonymous_api.get(URL)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {
        "database": "ok",
        "redis": "ok",
        "docker": "ok",
        "sandbox_image": "ok",
        "sandbox_runtime": "ok",
        "workers": "ok",
    }


def test_it_says_out_loud_that_sandboxes_get_gvisor_when_the_engine_has_it(anonymous_api, a_live_worker, settings):
    settings.SANDBOX_RUNTIME = "auto"
    runtime = anonymous_api.get(URL).json()["sandbox_runtime"]
    assert runtime["configured"] == "auto"
    assert "runsc" in runtime["available"]  # make test's set-up registers gVisor with the engine
    assert (runtime["chosen"], runtime["gvisor"]) == ("runsc", True)


def test_an_operator_may_force_runc_and_health_says_so(anonymous_api, a_live_worker, settings):
    settings.SANDBOX_RUNTIME = "runc"
    response = anonymous_api.get(URL)
    assert response.status_code == 200
    assert response.json()["sandbox_runtime"] | {"available": []} == {
        "configured": "runc",
        "chosen": "runc",
        "gvisor": False,
        "available": [],
    }


def test_a_forced_runtime_the_engine_lacks_makes_it_503_and_names_the_runtime(anonymous_api, a_live_worker, settings):
    settings.SANDBOX_RUNTIME = "gvisor-that-is-not-installed"
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert response.json()["failing"] == ["sandbox_runtime"]


def test_no_workers_makes_it_503_and_names_workers(anonymous_api, settings):
    # A Redis database no worker registers in: Redis itself answers, but nobody works.
    empty_database = urlparse(settings.REDIS_URL)._replace(path="/15").geturl()  # keeps the password
    settings.RQ_QUEUES = {name: {"URL": empty_database} for name in settings.RQ_QUEUES}
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert response.json()["failing"] == ["workers"]


def test_liveness_stays_200_while_readiness_is_503_for_want_of_workers(anonymous_api, settings):
    empty_database = urlparse(settings.REDIS_URL)._replace(path="/15").geturl()
    settings.RQ_QUEUES = {name: {"URL": empty_database} for name in settings.RQ_QUEUES}
    assert anonymous_api.get(URL).status_code == 503
    live = anonymous_api.get("/api/v1/health/live/")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})


def test_docker_engine_down_makes_it_503_and_names_docker(anonymous_api, a_live_worker, settings, fresh_docker_client):
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert "docker" in response.json()["failing"]


def test_missing_sandbox_image_makes_it_503_and_names_it(anonymous_api, a_live_worker, settings):
    settings.SANDBOX_IMAGE = "crucible-sandbox:does-not-exist"
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert response.json()["failing"] == ["sandbox_image"]


def test_redis_down_makes_it_503_and_names_redis(anonymous_api, a_live_worker, settings):

    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.RQ_QUEUES}
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert "redis" in response.json()["failing"]


def test_database_down_makes_it_503_and_names_database(anonymous_api, a_live_worker, monkeypatch):
    def broken_cursor():
        raise ConnectionError("database unreachable")

    # A unit-level stand-in for one function: the real connection cannot be cut mid-test safely.
    monkeypatch.setattr(health.connection, "cursor", broken_cursor)
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]


def test_the_report_holds_no_secrets_versions_or_paths(anonymous_api, a_live_worker):
    body = anonymous_api.get(URL).content.decode()
    for leak in (settings.SECRET_KEY, settings.DATABASE_URL, settings.REDIS_URL, "/var/run", "version"):
        assert leak not in body


# --- Readiness from heartbeats and from what workers report of their engines --------------------


def publish(worker: Worker, report: EngineReport) -> None:
    worker.connection.hset(worker.key, ENGINE_FIELD, json.dumps(report.as_dict()))


def test_a_web_role_without_an_engine_is_ready_when_a_live_worker_reports_a_healthy_one(
    anonymous_api, a_live_worker, settings, fresh_docker_client
):
    publish(a_live_worker, enginereport.probe())  # what a worker host sees of its own engine
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"  # this web process has no engine at all
    engine.reset()
    assert not engine.ping()
    response = anonymous_api.get(URL)
    assert response.status_code == 200, response.json()
    assert set(response.json()["checks"].values()) == {"ok"}
    assert response.json()["sandbox_runtime"]["chosen"] in ("runc", "runsc")


def test_a_worker_whose_engine_lacks_the_sandbox_image_makes_it_503_although_the_webs_engine_has_it(
    anonymous_api, a_live_worker
):
    publish(a_live_worker, dataclasses.replace(enginereport.probe(), sandbox_image=False))
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert response.json()["failing"] == ["sandbox_image"]


def test_one_healthy_host_among_broken_ones_is_enough_to_take_work(anonymous_api, a_live_worker, another_live_worker):
    publish(a_live_worker, dataclasses.replace(enginereport.probe(), docker=False))
    publish(another_live_worker, enginereport.probe())
    assert anonymous_api.get(URL).status_code == 200


def test_a_worker_whose_heartbeat_went_stale_does_not_count(anonymous_api, a_live_worker):
    stale = datetime.now(UTC) - timedelta(seconds=settings.WORKER_REGISTRATION_TTL_S + 5)
    a_live_worker.connection.hset(a_live_worker.key, "last_heartbeat", utcformat(stale))
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert response.json()["failing"] == ["workers"]


def test_a_stale_engine_report_is_not_trusted_and_the_web_asks_its_own_engine(
    anonymous_api, a_live_worker, settings, fresh_docker_client
):
    old = dataclasses.replace(enginereport.probe(), checked_at=time.time() - 3600)
    publish(a_live_worker, old)
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    engine.reset()
    response = anonymous_api.get(URL)
    assert response.status_code == 503
    assert "docker" in response.json()["failing"]
