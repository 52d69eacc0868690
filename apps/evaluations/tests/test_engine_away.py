"""A run whose sandbox cannot be created because the engine is not there (restarting: its socket is
gone) ran nothing: its attempt does not count. The row goes back to the queue, and runs once the
engine answers again (the reconciler enqueues it then)."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from apps.evaluations import running
from apps.evaluations.models import Status
from apps.evaluations.tests.factories import make_evaluation
from apps.sandboxing import sandbox, selfcheck

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def policy_checked():
    """The sandbox self-check has passed (it starts a canary sandbox of its own) before the engine goes."""
    selfcheck.require_policy()


def test_alices_run_whose_engine_went_away_before_its_sandbox_started_goes_back_to_the_queue_uncounted(
    alice, monkeypatch, settings
):
    settings.SANDBOX_POOL_SIZE = 0

    def engine_gone(config):
        raise requests.exceptions.ConnectionError(("Connection aborted.", FileNotFoundError(2, "No such file")))

    def client_gone(config):  # a new client of the SDK asks the engine's version first
        try:
            engine_gone(config)
        except requests.exceptions.ConnectionError as exc:
            raise docker.errors.DockerException(f"Error while fetching server API version: {exc}") from exc

    for gone in (engine_gone, client_gone):
        evaluation = make_evaluation(alice, code="print('after the restart')")
        with monkeypatch.context() as patched:
            patched.setattr(sandbox, "_engine_create", gone)
            assert running.run(str(evaluation.pk)) == running.RunDisposition.DEFERRED_ENGINE_DOWN
        evaluation.refresh_from_db()
        assert (evaluation.status, evaluation.attempts, evaluation.worker) == (Status.QUEUED, 0, "")
    with monkeypatch.context() as patched:
        patched.setattr(sandbox, "_engine_create", engine_gone)
        assert running.run(str(evaluation.pk)) == running.RunDisposition.DEFERRED_ENGINE_DOWN
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.attempts, evaluation.worker, evaluation.started_at) == (
        Status.QUEUED,
        0,
        "",
        None,
    )
    # The engine is back: the run runs, as its first attempt.
    assert running.run(str(evaluation.pk)) == running.RunDisposition.FINISHED
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.attempts, evaluation.exit_code) == (Status.SUCCEEDED, 1, 0)


def test_a_run_that_loses_its_engine_after_its_sandbox_was_created_is_a_platform_fault_as_before(
    alice, monkeypatch, settings
):
    """Once the engine created the container, the run may have started: the retry policy decides."""
    settings.SANDBOX_POOL_SIZE = 0
    evaluation = make_evaluation(alice)

    def start_fails(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("engine went away")

    monkeypatch.setattr("docker.models.containers.Container.start", start_fails)
    assert running.run(str(evaluation.pk)) == running.RunDisposition.REQUEUED
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.attempts) == (Status.QUEUED, 1)
