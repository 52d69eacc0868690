"""Each worker host as the operator sees it (dashboard and metrics): its workers, its engine as its
workers report it, the sandboxes on it, its last heartbeat. The web asks no engine of its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import django_rq
import pytest
import redis
from rq import Worker
from rq.executions import Execution
from rq.job import Job
from rq.utils import utcformat

from apps.console.tests.test_metrics import scrape, value
from apps.evaluations import fleet
from apps.evaluations.worker import CrucibleWorker
from apps.sandboxing import engine

pytestmark = [pytest.mark.docker, pytest.mark.django_db]

# Host names of this run (the test Redis database outlives a test run).
RUN = "-" + uuid.uuid4().hex[:6]


@pytest.fixture
def a_worker_on(settings):
    """A Crucible worker registered as running on ``host`` (its birth starts its engine report)."""
    born = []
    docker_host = settings.DOCKER_HOST

    def start(host: str) -> CrucibleWorker:
        settings.WORKER_HOST = host + RUN
        worker = CrucibleWorker(
            ["default"], connection=django_rq.get_connection("default"), name=f"{host}-{uuid.uuid4().hex[:6]}"
        )
        worker.register_birth()
        born.append(worker)
        return worker

    yield start
    settings.DOCKER_HOST = docker_host  # a test may have taken the web's engine away
    engine.reset()
    for worker in born:
        worker.register_death()


def test_a_worker_says_which_host_it_runs_on_and_reports_its_engine_at_birth(a_worker_on):
    worker = a_worker_on("gpu-box-2")
    (state,) = [w for w in fleet.workers() if w.name == worker.name]
    assert (state.host, state.alive) == ("gpu-box-2" + RUN, True)
    assert state.engine is not None and state.engine.healthy
    assert state.engine.runtime in ("runc", "runsc")


def test_the_dashboard_lists_each_host_with_its_engine_and_workers(client, olivia, a_worker_on, settings):
    a_worker_on("gpu-box-1")
    a_worker_on("gpu-box-1")
    a_worker_on("gpu-box-2")
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"  # the web holds no engine socket
    engine.reset()
    client.force_login(olivia)
    page = client.get("/monitoring/").content.decode()
    for host, alive in (("gpu-box-1", "2 / 2"), ("gpu-box-2", "1 / 1")):
        row = page[page.index(f'data-host="{host}{RUN}"') :]
        row = row[: row.index("</tr>")]
        assert 'data-engine="ok"' in row and f"<td>{alive}</td>" in row, row
    assert "no-live-worker" not in page


def test_a_host_whose_workers_stopped_beating_is_shown_stale_and_nothing_will_run(client, olivia, a_worker_on):
    worker = a_worker_on("gpu-box-3")
    stale = datetime.now(UTC) - timedelta(minutes=5)
    worker.connection.hset(worker.key, "last_heartbeat", utcformat(stale))
    client.force_login(olivia)
    page = client.get("/monitoring/").content.decode()
    row = page[page.index(f'data-host="gpu-box-3{RUN}"') :]
    assert "<td>0 / 1</td>" in row[: row.index("</tr>")]
    assert 'data-alive="false"' in page
    assert "No worker has sent a heartbeat lately" in page


def test_metrics_have_a_series_per_host(olivia_api, a_worker_on):
    a_worker_on("gpu-box-1")
    a_worker_on("gpu-box-2")
    samples = scrape(olivia_api)
    for host in ("gpu-box-1" + RUN, "gpu-box-2" + RUN):
        assert value(samples, "crucible_host_workers", host=host) == 1
        assert value(samples, "crucible_host_engine_up", host=host) == 1
        assert value(samples, "crucible_host_sandboxes_running", host=host) == 0
        assert value(samples, "crucible_host_last_heartbeat_timestamp_seconds", host=host) > 0
    assert value(samples, "crucible_workers") >= 2


class RoundTrips:
    """Counts what this process sends to Redis (a command, or a pipeline's batch: one round trip each)."""

    def __init__(self, monkeypatch):
        self.count = 0
        send = redis.connection.AbstractConnection.send_packed_command

        def counted(connection, command, check_health=True):
            self.count += 1
            return send(connection, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)


def test_the_workers_are_read_in_three_round_trips_however_many_there_are(a_worker_on, monkeypatch):
    for box in range(6):
        a_worker_on(f"box-{box}")
    busy = a_worker_on("box-busy")
    job, _execution = running(busy)
    fleet.workers()  # this thread's connection is open (its handshake is not the question)
    trips = RoundTrips(monkeypatch)
    states = {state.name: state for state in fleet.workers()}
    assert trips.count == 3
    assert len([name for name in states if RUN in states[name].host]) == 7
    assert states[busy.name].job == job.id and all(
        s.job == "" for n, s in states.items() if RUN in s.host and n != busy.name
    )
    job.delete()


def test_a_workers_job_is_the_one_rq_says_it_runs_and_an_expired_execution_is_none(a_worker_on):
    worker = a_worker_on("box-rq")
    job, execution = running(worker)

    def as_rq_sees_it():
        found = Worker.find_by_key(worker.key, connection=worker.connection)
        return found.get_current_job_id() or "", found.get_state(), ", ".join(found.queue_names()), found.hostname

    (state,) = [w for w in fleet.workers() if w.name == worker.name]
    assert (state.job, state.state, state.queues, state.host) == as_rq_sees_it()
    assert state.job == job.id
    worker.connection.delete(execution.key)  # its worker stopped beating: the execution's hash expired
    (state,) = [w for w in fleet.workers() if w.name == worker.name]
    assert state.job == ""
    execution.save(ttl=60)  # back, so that RQ deletes the job and its execution as it does
    job.delete()


def running(worker) -> tuple[Job, Execution]:
    """A job ``worker`` runs, as RQ records it when a worker takes one (never performed here)."""
    job = Job.create("apps.evaluations.jobs.run_evaluation", args=["not-run"], connection=worker.connection)
    job.save()
    with worker.connection.pipeline() as pipeline:
        execution = Execution.create(job, ttl=60, pipeline=pipeline, worker_name=worker.name)
        pipeline.execute()
    return job, execution
