"""Status changes happen only through named transitions; a terminal status never changes again."""

import pytest

from apps.evaluations import running, services
from apps.evaluations.models import Control, Status
from apps.evaluations.tests.factories import make_evaluation

pytestmark = pytest.mark.django_db


def test_only_one_of_two_workers_claims_a_queued_evaluation(alice):
    evaluation = make_evaluation(alice)
    assert evaluation.claim("worker-1") is True
    assert evaluation.claim("worker-2") is False
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.worker, evaluation.attempts) == (Status.RUNNING, "worker-1", 1)


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
    assert running.run(str(evaluation.pk)).startswith("not claimed")
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
    from apps.audit.models import AuditEvent

    queued = make_evaluation(alice)
    services.cancel(queued, actor=alice)
    running_one = make_evaluation(alice, status=Status.RUNNING)
    services.stop(running_one, actor=alice)
    actions = set(AuditEvent.objects.values_list("action", "target"))
    assert ("evaluation.cancel", str(queued.pk)) in actions
    assert ("evaluation.stop", str(running_one.pk)) in actions


def test_cancelling_a_queued_evaluation_takes_its_job_off_the_queue(alice):
    import django_rq

    evaluation = make_evaluation(alice)
    queue = django_rq.get_queue(evaluation.queue_name)
    services.enqueue(evaluation.pk, evaluation.queue_name)
    assert services.job_id(evaluation.pk) in queue.job_ids
    services.cancel(evaluation, actor=alice)
    assert services.job_id(evaluation.pk) not in queue.job_ids
