"""`manage.py crucible_worker`: the queues, the worker class and its self-check before each job."""

import django_rq
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from rq.job import Job

from apps.evaluations import services, worker
from apps.evaluations.models import QUEUE_FOR_PRIORITY, Priority, Reason, Status
from apps.evaluations.tests.factories import make_evaluation
from apps.sandboxing import containers

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("empty_queues")]


def test_the_worker_checks_the_sandbox_policy_in_its_parent_before_each_job_on_every_queue(monkeypatch):
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
