"""The typed result: an error always says whose fault it was, and nothing else carries a failure."""

import pytest

from apps.sandboxing.outcomes import Failure, Outcome, RunResult


def test_a_failed_run_is_an_error_with_its_failure():
    result = RunResult.failed(Failure.LAUNCHER, "the launcher failed")
    assert (result.outcome, result.failure, result.error) == (Outcome.ERROR, Failure.LAUNCHER, "the launcher failed")


def test_an_error_without_a_failure_cannot_be_made():
    with pytest.raises(ValueError, match="failure"):
        RunResult.not_run(Outcome.ERROR)


def test_a_run_that_did_not_fail_cannot_carry_a_failure():
    with pytest.raises(ValueError, match="failure"):
        RunResult.not_run(Outcome.CANCELLED, failure=Failure.ENGINE_FAULT)


def test_only_the_engine_failing_or_being_away_is_worth_running_again():
    assert [failure for failure in Failure if failure.transient] == [Failure.ENGINE_FAULT, Failure.ENGINE_AWAY]
