"""Status changes happen only through named transitions; a terminal status never changes again."""

import importlib

import django_rq
import pytest
from django.apps import apps as django_apps

from apps.audit.models import AuditEvent
from apps.evaluations import running, services
from apps.evaluations.models import Control, OutputChunk, Reason, Status
from apps.evaluations.running import RunDisposition
from apps.evaluations.tests.factories import make_evaluation

pytestmark = pytest.mark.django_db


def test_only_one_of_two_workers_claims_a_queued_evaluation(alice):
    evaluation = make_evaluation(alice)
    assert evaluation.claim("worker-1") is True
    assert evaluation.claim("worker-2") is False
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.worker, evaluation.attempts) == (Status.RUNNING, "worker-1", 1)


def test_a_transition_made_here_reads_back_only_what_the_database_computed(alice, django_assert_num_queries):
    evaluation = make_evaluation(alice)
    with django_assert_num_queries(1):  # the update alone: the attempt count is set, not computed
        assert evaluation.claim("worker-1") is True
    with django_assert_num_queries(1):  # the update alone
        assert evaluation.finish(Status.SUCCEEDED, attempt=1, exit_code=0, duration_ms=12) is True
    fields = ("status", "reason", "worker", "attempts", "exit_code", "duration_ms", "started_at", "finished_at")
    held = {name: getattr(evaluation, name) for name in fields}
    evaluation.refresh_from_db()
    assert held == {name: getattr(evaluation, name) for name in fields}


def test_a_claim_reads_where_the_output_of_earlier_attempts_ends_in_the_same_statement(
    alice, django_assert_num_queries
):
    first, retried = make_evaluation(alice), make_evaluation(alice)
    OutputChunk.objects.bulk_create(
        OutputChunk(evaluation_id=retried.pk, seq=seq, stream="stdout", data=b"x") for seq in (1, 2, 3)
    )
    with django_assert_num_queries(1):
        assert retried.claim("worker-1") is True
    assert (retried.last_seq, retried.attempts) == (3, 1)
    assert first.claim("worker-1") is True and first.last_seq == 0


def test_a_claim_from_a_stale_read_of_a_row_claimed_and_queued_again_meanwhile_is_refused(alice):
    evaluation = make_evaluation(alice)
    elsewhere = type(evaluation).objects.get(pk=evaluation.pk)
    assert elsewhere.claim("worker-2") is True
    type(evaluation).objects.filter(pk=evaluation.pk).update(status=Status.QUEUED)  # retried: queued again
    assert evaluation.claim("worker-1") is False  # it read attempt 0; the row is at 1 (another job has it)
    assert evaluation.attempts == 1
    assert evaluation.claim("worker-1") is True  # read afresh, it may
    assert (evaluation.worker, evaluation.attempts) == ("worker-1", 2)


def test_a_transition_lost_to_another_worker_leaves_the_instance_with_what_the_row_holds(alice):
    evaluation = make_evaluation(alice)
    elsewhere = type(evaluation).objects.get(pk=evaluation.pk)
    assert elsewhere.claim("worker-2") is True
    assert evaluation.claim("worker-1") is False
    assert (evaluation.status, evaluation.worker, evaluation.attempts) == (Status.RUNNING, "worker-2", 1)


def test_a_terminal_status_never_changes_again(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    assert evaluation.finish(Status.SUCCEEDED, exit_code=0) is True
    assert evaluation.finish(Status.FAILED, exit_code=1) is False
    assert evaluation.fail_with_error("late") is False
    assert evaluation.end_queued(Status.CANCELLED, Control.CANCEL) is False
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)


def test_finish_refuses_a_non_terminal_status(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    with pytest.raises(ValueError):
        evaluation.finish(Status.QUEUED)


def test_cancelling_a_queued_evaluation_means_it_never_starts(alice):
    evaluation = make_evaluation(alice)
    services.cancel(evaluation, actor=alice)
    assert evaluation.status == Status.CANCELLED
    assert running.run(str(evaluation.pk)) == RunDisposition.NOT_CLAIMED
    evaluation.refresh_from_db()
    assert evaluation.status == Status.CANCELLED and evaluation.started_at is None


def test_cancelling_a_running_evaluation_asks_its_worker(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    services.cancel(evaluation, actor=alice)
    assert (evaluation.status, evaluation.control) == (Status.RUNNING, Control.CANCEL)


def test_a_stop_overrides_an_earlier_cancel_but_not_the_reverse(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    services.cancel(evaluation, actor=alice)
    services.stop(evaluation, actor=alice)
    assert evaluation.control == Control.STOP
    services.cancel(evaluation, actor=alice)
    assert evaluation.control == Control.STOP


def test_stopping_a_queued_evaluation_ends_it_stopped(alice):
    evaluation = make_evaluation(alice)
    services.stop(evaluation, actor=alice)
    assert evaluation.status == Status.STOPPED


def test_cancelling_a_finished_evaluation_changes_nothing(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    response = alice_api.delete(f"/api/v1/evaluations/{evaluation.pk}/")
    assert response.status_code == 202
    assert response.json()["status"] == "succeeded"
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.control) == (Status.SUCCEEDED, "")


def test_cancel_and_stop_are_audited(alice):
    queued = make_evaluation(alice)
    services.cancel(queued, actor=alice)
    running_one = make_evaluation(alice, status=Status.RUNNING)
    services.stop(running_one, actor=alice)
    actions = set(AuditEvent.objects.values_list("action", "target"))
    assert ("evaluation.cancel", str(queued.pk)) in actions
    assert ("evaluation.stop", str(running_one.pk)) in actions


def test_cancelling_a_queued_evaluation_takes_its_job_off_the_queue(alice):
    evaluation = make_evaluation(alice)
    queue = django_rq.get_queue(evaluation.queue_name)
    services.enqueue(evaluation.pk, evaluation.queue_name)
    assert services.job_id(evaluation.pk) in queue.job_ids
    services.cancel(evaluation, actor=alice)
    assert services.job_id(evaluation.pk) not in queue.job_ids


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (Status.SUCCEEDED, Reason.EXIT),
        (Status.FAILED, Reason.EXIT),
        (Status.TIMED_OUT, Reason.TIMEOUT),
        (Status.OOM_KILLED, Reason.OOM),
        (Status.CANCELLED, Reason.CANCELLED),
        (Status.STOPPED, Reason.STOPPED),
        (Status.SAFETY_STOPPED, Reason.SAFETY_RULE),
        (Status.ERROR, Reason.ENGINE_ERROR),
    ],
)
def test_finishing_gives_the_reason_the_status_implies(alice, status, reason):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    assert evaluation.reason == ""
    evaluation.finish(status)
    assert (evaluation.status, evaluation.reason) == (status, reason)


def test_an_output_cap_end_is_failed_with_its_own_reason(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    evaluation.finish(Status.FAILED, reason=Reason.OUTPUT_CAP, output_truncated=True)
    assert (evaluation.status, evaluation.reason, evaluation.exit_code) == (Status.FAILED, Reason.OUTPUT_CAP, None)


def test_a_queued_evaluation_cancelled_or_stopped_has_that_reason(alice):
    cancelled, stopped, safety = make_evaluation(alice), make_evaluation(alice), make_evaluation(alice)
    services.cancel(cancelled, actor=alice)
    services.stop(stopped, actor=alice)
    services.stop(safety, control=Control.SAFETY_STOP)
    assert [e.reason for e in (cancelled, stopped, safety)] == [Reason.CANCELLED, Reason.STOPPED, Reason.SAFETY_RULE]


def test_a_platform_fault_ends_error_with_the_reason_given(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    evaluation.fail_with_error("the worker went away", reason=Reason.WORKER_LOST)
    assert (evaluation.status, evaluation.reason, evaluation.error) == (
        Status.ERROR,
        Reason.WORKER_LOST,
        "the worker went away",
    )
    other = make_evaluation(alice)
    other.fail_with_error("engine refused")
    assert (other.status, other.reason) == (Status.ERROR, Reason.ENGINE_ERROR)


def test_a_requeued_evaluation_has_no_reason_until_it_ends_again(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING, attempts=1)
    assert evaluation.requeue(attempt=1) is True
    assert (evaluation.status, evaluation.reason) == (Status.QUEUED, "")


def test_rows_that_ended_before_reasons_existed_get_the_reason_their_end_implies(alice):
    fill_reasons = importlib.import_module("apps.evaluations.migrations.0003_reason").fill_reasons
    capped = make_evaluation(alice, status=Status.FAILED, exit_code=126, output_truncated=True)
    failed = make_evaluation(alice, status=Status.FAILED, exit_code=3)
    lost = make_evaluation(alice, status=Status.ERROR, error="worker_lost")
    shut_down = make_evaluation(alice, status=Status.ERROR, error="worker_shutdown")
    refused = make_evaluation(alice, status=Status.ERROR, error="sandbox image not found")
    safety = make_evaluation(alice, status=Status.SAFETY_STOPPED)
    queued = make_evaluation(alice)
    fill_reasons(django_apps, None)
    rows = [capped, failed, lost, shut_down, refused, safety, queued]
    for row in rows:
        row.refresh_from_db()
    assert [row.reason for row in rows] == [
        Reason.OUTPUT_CAP,
        Reason.EXIT,
        Reason.WORKER_LOST,
        Reason.WORKER_LOST,
        Reason.ENGINE_ERROR,
        Reason.SAFETY_RULE,
        "",
    ]
    assert (capped.exit_code, failed.exit_code) == (None, 3)
