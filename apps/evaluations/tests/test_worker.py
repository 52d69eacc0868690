"""`manage.py crucible_worker`: the queues, the worker class and its self-check before each job."""

import django_rq
import pytest
from django.core.management import call_command
from rq.job import Job

from apps.evaluations import worker

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def empty_queues():
    for name in ("high", "default", "low"):
        django_rq.get_queue(name).empty()


def test_the_worker_checks_the_sandbox_policy_in_its_parent_before_each_job_on_every_queue(monkeypatch):
    checks = []
    # Patched in the parent process: the count can only grow if the check runs there, before the fork.
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: checks.append(1) or [])
    jobs = [django_rq.get_queue(name).enqueue("os.getpid") for name in ("low", "default", "high")]
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker")
    assert [Job.fetch(job.id, connection=job.connection).get_status() for job in jobs] == ["finished"] * 3
    assert len(checks) == 3


def test_the_high_queue_is_worked_first(monkeypatch):
    monkeypatch.setattr(worker.selfcheck, "self_check", lambda: [])
    low = django_rq.get_queue("low").enqueue("time.time")
    high = django_rq.get_queue("high").enqueue("time.time")
    call_command("crucible_worker", "--burst", "--without-scheduler", "--name", "test-crucible-worker-order")
    low, high = (Job.fetch(j.id, connection=j.connection) for j in (low, high))
    assert high.started_at < low.started_at
