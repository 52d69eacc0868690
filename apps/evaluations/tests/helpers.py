"""Helpers for evaluation tests: submit through the API and run the queued jobs in-process."""

from __future__ import annotations

import threading
import time

import django_rq
from django.conf import settings
from django.db import connection
from rq import SimpleWorker

from apps.evaluations.controller import Controller
from apps.evaluations.models import Evaluation, Status
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.running import EvaluationRun
from apps.evaluations.tests.factories import make_evaluation

URL = "/api/v1/evaluations/"


def submit(api, **body):
    body.setdefault("code", "print('hello')")
    return api.post(URL, body, format="json")


def work_off_queues() -> None:
    """Run every queued job in this process (a non-forking burst worker on the real Redis)."""
    queues = [django_rq.get_queue(name) for name in settings.RQ_QUEUES]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True, with_scheduler=False)


def run_and_wait(api, **body) -> Evaluation:
    response = submit(api, **body)
    assert response.status_code == 201, response.content
    work_off_queues()
    return Evaluation.objects.get(pk=response.json()["id"])


class Background:
    """Run one evaluation's job in a thread (as a worker would), so a test can act on it while it runs."""

    def __init__(self, evaluation_id):
        self.evaluation_id = str(evaluation_id)
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self):
        from apps.evaluations import running

        try:
            running.run(self.evaluation_id)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the worker thread did not finish"


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def wait_for_status(evaluation_id, *statuses, timeout: float = 15.0) -> Evaluation:
    return wait_for(lambda: Evaluation.objects.filter(pk=evaluation_id, status__in=statuses).first(), timeout)


class RuleThatFired:
    """A safety monitor whose "stop" rule fired (what ``SafetyMonitor`` sets when it asks for the stop)."""

    stop_requested = True


def running_run(owner, *, monitor=None) -> EvaluationRun:
    """A claimed run of a new evaluation of ``owner``, ready to ``record`` a result (no sandbox)."""
    evaluation = make_evaluation(owner, status=Status.RUNNING, attempts=1)
    run = EvaluationRun(str(evaluation.pk))
    run.evaluation, run.attempt = evaluation, 1
    run.recorder = OutputRecorder(evaluation.pk)
    run.controller = Controller(evaluation, run.recorder, monitor, read_at=time.monotonic())  # nothing requested
    return run
