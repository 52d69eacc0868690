"""How a run's outcome and the request standing at its end decide the evaluation's status."""

from __future__ import annotations

import time

import pytest
from django.db import DatabaseError

from apps.evaluations.models import Control, Evaluation, Reason, Status
from apps.evaluations.running import end_of
from apps.evaluations.tests.helpers import RuleThatFired, running_run
from apps.monitoring.models import RunTiming
from apps.sandboxing.outcomes import Outcome, RunResult


def test_a_program_that_exits_by_itself_succeeds_or_fails_on_its_exit_code():
    assert end_of(Outcome.EXITED, 0, None) == (Status.SUCCEEDED, Reason.EXIT)
    assert end_of(Outcome.EXITED, 3, None) == (Status.FAILED, Reason.EXIT)


def test_a_stop_that_did_the_stopping_ends_stopped_or_safety_stopped_by_who_asked():
    assert end_of(Outcome.STOPPED, 137, Control.STOP) == (Status.STOPPED, Reason.STOPPED)
    assert end_of(Outcome.STOPPED, 137, Control.SAFETY_STOP) == (Status.SAFETY_STOPPED, Reason.SAFETY_RULE)


@pytest.mark.parametrize(
    "outcome, exit_code",
    [(Outcome.OOM_KILLED, 137), (Outcome.EXITED, 137), (Outcome.EXITED, 0), (Outcome.TIMED_OUT, None)],
)
def test_a_fork_bomb_that_ran_out_of_memory_before_the_safety_stop_reached_it_is_still_safety_stopped(
    outcome, exit_code
):
    assert end_of(outcome, exit_code, Control.SAFETY_STOP) == (Status.SAFETY_STOPPED, Reason.SAFETY_RULE)


def test_a_users_stop_that_an_oom_kill_beat_leaves_the_oom_kill_on_record():
    assert end_of(Outcome.OOM_KILLED, 137, Control.STOP) == (Status.OOM_KILLED, Reason.OOM)


def test_a_platform_fault_stays_an_error_even_under_a_safety_stop():
    assert end_of(Outcome.ERROR, None, Control.SAFETY_STOP) == (Status.ERROR, Reason.ENGINE_ERROR)


def oom_killed() -> RunResult:
    result = RunResult.not_run(Outcome.OOM_KILLED)
    result.exit_code = 137
    return result


@pytest.mark.django_db
def test_alices_fork_bomb_killed_for_memory_before_the_runner_saw_the_rule_fire_is_recorded_safety_stopped(alice):
    run = running_run(alice, monitor=RuleThatFired())
    run.record(oom_killed())
    evaluation = Evaluation.objects.get(pk=run.evaluation.pk)
    assert (evaluation.status, evaluation.reason) == (Status.SAFETY_STOPPED, Reason.SAFETY_RULE)
    assert evaluation.exit_code == 137


@pytest.mark.django_db
def test_alices_run_killed_for_memory_with_no_rule_fired_is_recorded_oom_killed(alice):
    run = running_run(alice)
    run.record(oom_killed())
    assert Evaluation.objects.get(pk=run.evaluation.pk).status == Status.OOM_KILLED


def exited() -> RunResult:
    result = RunResult.not_run(Outcome.EXITED)
    result.exit_code = 0
    return result


def with_sandbox_ready_after(run, ms: int):
    run.started = time.monotonic() - ms / 1000
    run.controller.first_call_at = time.monotonic()
    return run


@pytest.mark.django_db
def test_alices_run_records_how_long_its_sandbox_took_to_be_ready_with_its_end(alice):
    run = with_sandbox_ready_after(running_run(alice), 80)
    run.record(exited())
    assert Evaluation.objects.get(pk=run.evaluation.pk).status == Status.SUCCEEDED
    assert 80 <= RunTiming.objects.get(evaluation_id=run.evaluation.pk).sandbox_start_ms < 1000


@pytest.mark.django_db
def test_a_sandbox_start_time_the_database_refuses_leaves_alices_run_ended_as_it_ended(alice, monkeypatch):
    def refused(*args, **kwargs):
        raise DatabaseError("the metrics table refused the row")

    monkeypatch.setattr(RunTiming, "record", refused)
    run = with_sandbox_ready_after(running_run(alice), 80)
    run.record(exited())
    evaluation = Evaluation.objects.get(pk=run.evaluation.pk)
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)
    assert not RunTiming.objects.filter(evaluation_id=evaluation.pk).exists()


@pytest.mark.django_db
def test_the_sandbox_start_of_a_retried_run_replaces_the_first_attempts(alice):
    run = with_sandbox_ready_after(running_run(alice), 80)
    RunTiming.record(run.evaluation.pk, 2500, False)  # the first attempt's cold start
    run.record(exited())
    timing = RunTiming.objects.get(evaluation_id=run.evaluation.pk)
    assert timing.sandbox_start_ms < 1000 and timing.warm is False
