"""A run's sandbox is got while its row is claimed (``runner.Ahead``), not after: a cold one's create
and start, or the claim (rename) of a warm one from the worker's pool, overlap the claim's queries.
A run that is not claimed leaves nothing behind."""

from __future__ import annotations

import time

import pytest

from apps.evaluations import running
from apps.evaluations.models import Evaluation, Runtime, Status
from apps.evaluations.tests.factories import make_evaluation
from apps.monitoring.models import RunTiming
from apps.sandboxing import engine, pool, runner
from apps.sandboxing.policy import LABEL_RUN
from tests.stack import wait_until

pytestmark = pytest.mark.docker


def containers_of(evaluation) -> list[dict]:
    return engine.client().api.containers(all=True, filters={"label": f"{LABEL_RUN}={evaluation.pk}"})


def named_for(evaluation) -> list[dict]:
    """The containers named for the run (a warm pool's sandbox carries the pool's run label)."""
    return engine.client().api.containers(all=True, filters={"name": f"^/crucible-{evaluation.pk}$"})


class ClaimWatch:
    """Wraps ``Evaluation.claim``: notes whether the run's sandbox was already there (created, or being
    created: waited for up to ``wait_s``) when the claim was asked for, then claims, or refuses to."""

    def __init__(self, monkeypatch, evaluation, *, refuse: bool = False, wait_s: float = 5, look=containers_of):
        self.sandbox_before_claim = None
        claim = Evaluation.claim

        def watched(row, worker):
            deadline = time.monotonic() + wait_s
            while not look(evaluation) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.sandbox_before_claim = bool(look(evaluation))
            return False if refuse else claim(row, worker)

        monkeypatch.setattr(Evaluation, "claim", watched)


def test_alices_cold_run_starts_its_sandbox_while_her_row_is_claimed(alice, monkeypatch, settings):
    settings.SANDBOX_POOL_SIZE = 0
    evaluation = make_evaluation(alice, code="print('ahead')")
    watch = ClaimWatch(monkeypatch, evaluation)
    assert running.run(str(evaluation.pk)) == running.RunDisposition.FINISHED
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)
    assert b"".join(bytes(c.data) for c in evaluation.chunks.order_by("seq")) == b"ahead\n"
    assert watch.sandbox_before_claim is True
    # Its start time counts from when the sandbox began, before the claim.
    assert RunTiming.objects.get(evaluation_id=evaluation.pk).sandbox_start_ms > 0


def test_alices_run_under_tests_starts_its_sandbox_while_her_row_is_claimed(alice, monkeypatch, settings):
    """Each test's program then runs in it, as in the sandbox the runner would have started."""
    settings.SANDBOX_POOL_SIZE = 0
    tests = [{"name": f"check {n}", "kind": "check", "code": f"assert square({n}) == {n * n}"} for n in (2, 3)]
    evaluation = make_evaluation(alice, code="def square(x):\n    return x * x", tests=tests)
    watch = ClaimWatch(monkeypatch, evaluation)
    assert running.run(str(evaluation.pk)) == running.RunDisposition.FINISHED
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.passed) == (Status.SUCCEEDED, True)
    assert watch.sandbox_before_claim is True
    wait_until(lambda: not containers_of(evaluation), 30, interval=0.1, what="the sandbox removed")


def test_a_run_that_is_not_claimed_removes_the_sandbox_it_started_ahead(alice, monkeypatch, settings):
    settings.SANDBOX_POOL_SIZE = 0
    evaluation = make_evaluation(alice)
    watch = ClaimWatch(monkeypatch, evaluation, refuse=True)  # another worker took the row meanwhile
    assert running.run(str(evaluation.pk)) == running.RunDisposition.NOT_CLAIMED
    assert watch.sandbox_before_claim is True
    wait_until(lambda: not containers_of(evaluation), 30, interval=0.1, what="the sandbox started ahead removed")
    evaluation.refresh_from_db()
    assert evaluation.status == Status.QUEUED


def test_a_retried_run_starts_no_sandbox_before_its_claim(alice, monkeypatch, settings):
    """Its claim first removes what the earlier attempt left under the run's name."""
    settings.SANDBOX_POOL_SIZE = 0
    evaluation = make_evaluation(alice, attempts=1)
    watch = ClaimWatch(monkeypatch, evaluation, wait_s=1)
    assert running.run(str(evaluation.pk)) == running.RunDisposition.FINISHED
    assert watch.sandbox_before_claim is False


@pytest.fixture
def warm_pool_for(monkeypatch, settings):
    """A worker's warm pool with one idle sandbox of ``evaluation``'s profile: ``warm_pool_for(evaluation)``."""
    owner = "test-worker-ahead"
    settings.SANDBOX_POOL_SIZE = 1
    monkeypatch.setattr(running, "pool_owner", lambda: owner)

    def fill(evaluation):
        run = running.EvaluationRun(str(evaluation.pk))
        run.evaluation = evaluation
        profile = runner.profile_for(run._run_request(Runtime.objects.get(name=evaluation.language)))
        pool.WarmPool(owner, 1, lambda: [profile]).refill_once()
        return owner

    yield fill
    pool.remove_pools_of(owner)


def test_alices_run_claims_a_warm_sandbox_while_her_row_is_claimed(alice, monkeypatch, warm_pool_for):
    evaluation = make_evaluation(alice, code="print('warm')")
    owner = warm_pool_for(evaluation)
    watch = ClaimWatch(monkeypatch, evaluation, look=named_for)
    assert running.run(str(evaluation.pk)) == running.RunDisposition.FINISHED
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)
    assert b"".join(bytes(c.data) for c in evaluation.chunks.order_by("seq")) == b"warm\n"
    assert watch.sandbox_before_claim is True
    assert RunTiming.objects.get(evaluation_id=evaluation.pk).warm is True
    assert pool.idle(owner) == [] and named_for(evaluation) == []


def test_a_run_that_is_not_claimed_removes_the_warm_sandbox_it_claimed_ahead(alice, monkeypatch, warm_pool_for):
    """It held no code, but it was claimed: it is not handed to another run."""
    evaluation = make_evaluation(alice)
    owner = warm_pool_for(evaluation)
    watch = ClaimWatch(monkeypatch, evaluation, refuse=True, look=named_for)
    assert running.run(str(evaluation.pk)) == running.RunDisposition.NOT_CLAIMED
    assert watch.sandbox_before_claim is True
    wait_until(lambda: not named_for(evaluation), 30, interval=0.1, what="the warm sandbox claimed ahead removed")
    assert pool.idle(owner) == []
    evaluation.refresh_from_db()
    assert evaluation.status == Status.QUEUED
