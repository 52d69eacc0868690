"""`manage.py crucible_worker`: the queues, the worker class and its self-check before each job, with a
work horse forked per job (``WORKER_FORK=true``) and without (the default)."""

import os
import signal
import threading
import uuid

import django_rq
import pytest
from django.core.management import call_command
from django.db import connection
from redis.connection import AbstractConnection
from rq.job import Job

from apps.evaluations import running, services, worker
from apps.evaluations.models import QUEUE_FOR_PRIORITY, Evaluation, Priority, Reason, Status
from apps.evaluations.tests.factories import make_evaluation
from apps.evaluations.tests.helpers import wait_for, wait_for_status
from apps.evaluations.worker import CrucibleWorker, warm_profiles
from apps.sandboxing import containers, pool, removal, selfcheck
from tests.stack import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("empty_queues")]


@pytest.fixture(autouse=True)
def the_test_process_keeps_its_priority(settings):
    """``crucible_worker`` run in this process (``call_command``) would lower this process's CPU
    priority for every test after it (``WORKER_NICE``, tested in its own processes)."""
    settings.WORKER_NICE = 0


def backend_pid() -> int:
    """A job: the PostgreSQL server process that serves the connection the job runs on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def results_of(jobs) -> list:
    return [Job.fetch(job.id, connection=job.connection).return_value() for job in jobs]


@pytest.fixture
def signal_handlers_restored():
    """A test that signals its own process gets back the handlers (and the shutdown flag) it had."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    worker.shutdown.clear()


@pytest.mark.parametrize("fork", [True, False], ids=["forking", "in-process"])
def test_the_worker_checks_the_sandbox_policy_in_its_parent_before_each_job_on_every_queue(monkeypatch, settings, fork):
    settings.WORKER_FORK = fork
    checks = []
    # Patched in the parent process: the count can only grow if the check runs there, before the fork.
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: checks.append(1) or [])
    jobs = [django_rq.get_queue(name).enqueue("os.getpid") for name in reversed(settings.RQ_QUEUES)]
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker")
    assert [Job.fetch(job.id, connection=job.connection).get_status() for job in jobs] == ["finished"] * 3
    assert len(checks) == 3


def test_the_high_queue_is_worked_first(monkeypatch):
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: [])
    low = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.LOW]).enqueue("time.time")
    high = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.HIGH]).enqueue("time.time")
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker-order")
    low, high = (Job.fetch(j.id, connection=j.connection) for j in (low, high))
    assert high.started_at < low.started_at


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_engine_refuses_the_sandbox_policy_runs_nothing(alice, settings):
    """The real self-check, on an engine that refuses the policy it is asked for (an unknown OCI runtime):
    the evaluation ends ``error`` "sandbox unavailable" and its code never reaches a container."""
    settings.SANDBOX_RUNTIME = "crucible-test-no-such-runtime"  # also a fresh key of the self-check's cache
    evaluation = make_evaluation(alice, code="print('must not run')")
    services.enqueue(evaluation.pk, evaluation.queue_name)
    connection.close()  # the work horse is forked: it opens its own connection
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker-refuses")
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.reason) == (Status.ERROR, Reason.ENGINE_ERROR)
    assert evaluation.error.startswith("sandbox unavailable:")
    assert not evaluation.chunks.exists()
    assert str(evaluation.pk) not in {run_id for _, run_id in containers.list_instance_containers()}


@pytest.mark.parametrize("fork", [True, False], ids=["forking", "in-process"])
def test_a_job_runs_in_a_forked_work_horse_unless_the_worker_is_told_not_to_fork(monkeypatch, settings, fork):
    settings.WORKER_FORK = fork
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: [])
    job = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.NORMAL]).enqueue("os.getpid")
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", f"test-crucible-worker-fork-{fork}")
    (pid,) = results_of([job])
    assert (pid == os.getpid()) is not fork


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fork", [True, False], ids=["forking", "in-process"])
def test_a_worker_that_does_not_fork_keeps_its_database_connection_from_job_to_job(monkeypatch, settings, fork):
    settings.WORKER_FORK = fork
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: [])
    queue = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.NORMAL])
    jobs = [queue.enqueue(f"{__name__}.backend_pid") for _ in range(3)]
    connection.close()  # a forked horse must not share the test's socket
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", f"test-crucible-worker-db-{fork}")
    assert len(set(results_of(jobs))) == (3 if fork else 1)


@pytest.mark.django_db(transaction=True)
def test_alices_evaluation_runs_to_its_end_in_a_worker_that_does_not_fork(alice, settings):
    settings.WORKER_FORK = False
    evaluation = make_evaluation(alice, code="print('hello from alice')")
    services.enqueue(evaluation.pk, evaluation.queue_name)
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker-alice")
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)
    assert b"".join(bytes(c.data) for c in evaluation.chunks.order_by("seq")) == b"hello from alice\n"
    assert str(evaluation.pk) not in {run_id for _, run_id in containers.list_instance_containers()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fork", [True, False], ids=["forking", "in-process"])
def test_a_worker_that_does_not_fork_removes_bobs_sandboxes_behind_his_runs_and_none_is_left(bob, settings, fork):
    settings.WORKER_FORK = fork
    evaluations = [make_evaluation(bob, code=f"print({i})") for i in range(3)]
    for evaluation in evaluations:
        services.enqueue(evaluation.pk, evaluation.queue_name)
    name = f"test-crucible-worker-behind-{fork}"
    queue = django_rq.get_queue(evaluations[0].queue_name)
    rq_worker = CrucibleWorker([queue], connection=queue.connection, name=name)
    rq_worker.work(burst=True, with_scheduler=False)
    assert {e.status for e in Evaluation.objects.filter(pk__in=[e.pk for e in evaluations])} == {Status.SUCCEEDED}
    left = {run_id for _, run_id in containers.list_instance_containers()}
    assert not left & {str(e.pk) for e in evaluations}
    # In-process, the worker's remover removed them (and it stopped with the worker); a forking
    # worker's horses removed their own.
    removed_behind = rq_worker.remover.removed if rq_worker.remover is not None else 0
    assert removed_behind == (0 if fork else 3)
    assert removal.installed() is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("signal_handlers_restored")
def test_a_worker_that_does_not_fork_hands_alices_run_back_when_it_is_stopped_with_sigterm(alice, settings):
    """What a process manager sends: the run in the worker's own process is stopped at once, handed back
    (requeued for its second attempt, the notice says why) and its container removed; the worker exits."""
    settings.WORKER_FORK = False
    evaluation = make_evaluation(alice, code="import time\nprint('started', flush=True)\ntime.sleep(60)")
    services.enqueue(evaluation.pk, evaluation.queue_name)

    def stop_the_worker_once_the_run_has_started():
        wait_for_status(evaluation.pk, Status.RUNNING, timeout=60)
        try:
            wait_for(lambda: evaluation.chunks.exists(), timeout=30)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            connection.close()

    stopper = threading.Thread(target=stop_the_worker_once_the_run_has_started, daemon=True)
    stopper.start()
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker-stopped")
    stopper.join(10)
    evaluation = Evaluation.objects.get(pk=evaluation.pk)
    assert (evaluation.status, evaluation.attempts) == (Status.QUEUED, 1)
    notices = [bytes(c.data) for c in evaluation.chunks.filter(stream="stderr")]
    assert any(b"worker_shutdown" in notice for notice in notices), notices
    assert str(evaluation.pk) not in {run_id for _, run_id in containers.list_instance_containers()}


def test_a_worker_that_does_not_fork_keeps_rqs_heartbeats_going_while_a_job_runs(monkeypatch, settings):
    """What the forking parent does while its horse runs: without it the worker's key would outlive a
    killed worker by the whole job timeout on the dashboard and the health check."""
    settings.WORKER_FORK = False
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: [])
    beats = []
    real_beat = worker.CrucibleWorker.maintain_heartbeats
    monkeypatch.setattr(
        worker.CrucibleWorker, "maintain_heartbeats", lambda self, *a: beats.append(1) or real_beat(self, *a)
    )
    queue = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.NORMAL])
    job = queue.enqueue("time.sleep", 2.5)
    rq_worker = worker.CrucibleWorker([queue], connection=queue.connection, job_monitoring_interval=1)
    rq_worker.work(burst=True, with_scheduler=False)
    assert Job.fetch(job.id, connection=job.connection).get_status() == "finished"
    assert beats, "no heartbeat while the job ran"


def test_a_job_that_raises_in_a_worker_that_does_not_fork_leaves_the_worker_running_the_next(monkeypatch, settings):
    settings.WORKER_FORK = False
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: [])
    queue = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.NORMAL])
    broken = queue.enqueue("builtins.int", "not a number")
    after = queue.enqueue("os.getpid")
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker-raises")
    statuses = [Job.fetch(job.id, connection=job.connection).get_status() for job in (broken, after)]
    assert statuses == ["failed", "finished"]
    assert results_of([after]) == [os.getpid()]


@pytest.mark.docker
def test_a_worker_fills_its_warm_pool_once_registered_and_drains_it_when_it_stops(settings):
    settings.SANDBOX_POOL_SIZE = 2
    queues = [django_rq.get_queue(name) for name in settings.RQ_QUEUES]
    worker = CrucibleWorker(queues, connection=queues[0].connection, name=f"pooled-{uuid.uuid4().hex[:8]}")
    worker.register_birth()
    try:
        wait_until(lambda: len(pool.idle(worker.name)) == 2, 60, interval=0.2, what="the warm pool filled")
    finally:
        worker.register_death()
    assert pool.idle(worker.name) == []
    assert worker.pool.stats.started >= 2


def test_the_warm_pool_keeps_the_profiles_of_the_runtimes_the_operator_names(settings):
    settings.SANDBOX_POOL_RUNTIMES = ["c", "python", "no-such-runtime"]
    profiles = warm_profiles()
    assert [(p.image, p.build_dir) for p in profiles] == [
        (settings.SANDBOX_IMAGE, False),
        (
            f"{settings.SANDBOX_RUNTIME_IMAGE_PREFIX}c:latest",
            True,
        ),  # python shares SANDBOX_IMAGE's; unknown names are skipped
    ]


def test_a_heartbeat_between_jobs_is_one_round_trip_and_still_registers_a_forgotten_worker_again(monkeypatch):
    """RQ beats three times a job: its own commands, the registration check and the engine report go
    to Redis together; a worker Redis forgot (restarted empty) is registered again at that beat."""
    queue = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.NORMAL])
    rq_worker = CrucibleWorker([queue], connection=queue.connection, name=f"beats-{uuid.uuid4().hex[:8]}")
    rq_worker.register_birth()
    try:
        rq_worker.heartbeat()  # the connection is open: what is counted next is commands only
        sent = []
        real_send = AbstractConnection.send_packed_command
        counted = lambda self, *a, **kw: sent.append(1) or real_send(self, *a, **kw)  # noqa: E731
        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
        rq_worker.heartbeat()
        assert len(sent) == 1
        forgotten = [w.name for w in worker.Worker.all(connection=queue.connection)]
        assert rq_worker.name in forgotten
        queue.connection.delete(rq_worker.key)  # as a flush does to this worker's hash
        rq_worker.heartbeat()
        assert rq_worker.name in [w.name for w in worker.Worker.all(connection=queue.connection)]
        assert queue.connection.hexists(rq_worker.key, "birth")
    finally:
        rq_worker.register_death()


def test_a_worker_runs_the_canary_once_registered_so_its_first_job_does_not_wait_for_it(monkeypatch):
    """The first job of a worker found no verdict and ran the canary itself (about 0.6 s under gVisor)."""
    monkeypatch.setattr(selfcheck, "_cache", {})
    queue = django_rq.get_queue(QUEUE_FOR_PRIORITY[Priority.NORMAL])
    rq_worker = CrucibleWorker([queue], connection=queue.connection, name=f"checks-{uuid.uuid4().hex[:8]}")
    rq_worker.register_birth()
    try:
        wait_until(lambda: selfcheck._cached(selfcheck._key()) is not None, 60, interval=0.05, what="a verdict")
        assert selfcheck._cached(selfcheck._key()) == []  # the engine enforces the policy
        assert rq_worker.policy_refresher._thread.name == f"sandbox-selfcheck-{rq_worker.name}"
    finally:
        rq_worker.register_death()
    assert not rq_worker.policy_refresher._thread.is_alive()


@pytest.fixture
def alarm_handler():
    """A SIGALRM handler as RQ's death penalty installs; the timer and handler put back after."""
    handler = signal.signal(signal.SIGALRM, lambda *_: None)
    timer = signal.getitimer(signal.ITIMER_REAL)
    yield
    signal.setitimer(signal.ITIMER_REAL, *timer)
    signal.signal(signal.SIGALRM, handler)


def test_a_sample_run_next_in_the_job_of_the_one_before_gets_the_whole_timeout_of_a_job(alarm_handler):
    signal.alarm(5)  # what is left of the job's limit after the first sample
    running.rearm_job_timeout(400)
    assert 395 <= signal.alarm(0) <= 400


def test_outside_an_rq_job_no_timeout_is_armed_for_a_sample_run_next():
    handler = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    timer = signal.setitimer(signal.ITIMER_REAL, 0)  # none armed (pytest-timeout's, put back after)
    try:
        running.rearm_job_timeout(400)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, *timer)
        signal.signal(signal.SIGALRM, handler)
