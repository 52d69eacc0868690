"""Fair dispatch: an owner's held batch samples go onto the work queues a window at a time, the most
urgent of the oldest first, each exactly once, whatever other owners have queued or running."""

from __future__ import annotations

import threading
import uuid

import django_rq
import pytest
from django.conf import settings
from django.db import connection

from apps.evaluations import dispatch, running, services, worker
from apps.evaluations.models import QUEUE_FOR_PRIORITY, Evaluation, Priority, Status
from apps.evaluations.tests.factories import make_evaluation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


@pytest.fixture
def window(settings):
    settings.FAIR_SHARE_WINDOW = 3
    return 3


def held_samples(owner, count: int, **fields) -> list[Evaluation]:
    batch_id = fields.pop("batch_id", uuid.uuid4())
    return [make_evaluation(owner, batch_id=batch_id, held=True, **fields) for _ in range(count)]


def queued_jobs() -> dict[str, list]:
    return {name: django_rq.get_queue(name).get_jobs() for name in settings.RQ_QUEUES}


def test_an_owner_gets_a_window_of_samples_released_oldest_first_and_enqueued(alice, window):
    samples = held_samples(alice, 5)
    released = dispatch.release(alice.pk)
    assert released == [str(s.pk) for s in samples[:3]]
    assert set(Evaluation.objects.filter(held=False).values_list("pk", flat=True)) == {s.pk for s in samples[:3]}
    jobs = queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]
    assert sorted(job.id for job in jobs) == sorted(services.job_id(s.pk) for s in samples[:3])


def test_a_full_window_releases_nothing_until_a_sample_ends(alice, window):
    samples = held_samples(alice, 5)
    dispatch.release(alice.pk)
    assert dispatch.release(alice.pk) == []  # three released and not ended: no room
    Evaluation.objects.filter(pk=samples[0].pk).update(status=Status.SUCCEEDED)
    assert dispatch.release(alice.pk) == [str(samples[3].pk)]
    assert Evaluation.objects.filter(held=True).count() == 1


def test_running_samples_count_against_the_window_and_other_owners_do_not(alice, bob, window):
    make_evaluation(alice, status=Status.RUNNING, batch_id=uuid.uuid4())  # released earlier, running
    make_evaluation(alice)  # a single run: not a batch sample, never counted
    held_samples(bob, 3, status=Status.QUEUED)
    make_evaluation(bob, status=Status.RUNNING, batch_id=uuid.uuid4())
    held_samples(alice, 4)
    assert len(dispatch.release(alice.pk)) == 2
    assert len(dispatch.release(bob.pk)) == 2


def test_the_most_urgent_of_the_oldest_held_go_first(alice, window):
    older = held_samples(alice, 2, priority=Priority.LOW)
    normal = held_samples(alice, 1)
    urgent = held_samples(alice, 1, priority=Priority.HIGH)
    released = dispatch.release(alice.pk)
    assert released == [str(urgent[0].pk), str(normal[0].pk), str(older[0].pk)]
    jobs = queued_jobs()
    assert [job.id for job in jobs[QUEUE_FOR_PRIORITY[Priority.HIGH]]] == [services.job_id(urgent[0].pk)]
    assert [job.id for job in jobs[QUEUE_FOR_PRIORITY[Priority.LOW]]] == [services.job_id(older[0].pk)]


def test_a_released_job_may_run_its_timeout_once_per_test_and_some(alice, window):
    (sample,) = held_samples(alice, 1, timeout_s=7, tests=[{"code": "assert 1"}] * 4)
    dispatch.release(alice.pk)
    (job,) = queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]
    assert job.timeout == services.job_timeout(sample) == 7 * 4 + 300


def test_ended_or_cancelled_held_rows_are_never_released(alice, window):
    (cancelled,) = held_samples(alice, 1, status=Status.CANCELLED)
    assert dispatch.release(alice.pk) == []
    assert Evaluation.objects.get(pk=cancelled.pk).held is True
    assert queued_jobs() == {name: [] for name in settings.RQ_QUEUES}


def test_concurrent_releases_of_one_owner_never_overshoot_the_window(alice, window):
    held_samples(alice, 20)
    released: list[list[str]] = []

    def release() -> None:
        try:
            released.append(dispatch.release(alice.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=release) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [pk for ids in released for pk in ids]
    assert len(every) == len(set(every)) == 3
    assert sum(len(jobs) for jobs in queued_jobs().values()) == 3


# --- A job that reuses its batch's sandbox keeps the batch's next sample (dispatch.keeping) -------


def test_a_job_reusing_its_batchs_sandbox_keeps_the_next_released_sample_of_it_rather_than_enqueue_it(alice, window):
    samples = held_samples(alice, 5)
    with dispatch.keeping() as keep:
        keep.batch_id = samples[0].batch_id
        released = dispatch.release(alice.pk)
        kept = keep.take()
    assert released == [str(s.pk) for s in samples[:3]]  # the window, the kept one in it
    assert (kept.evaluation_id, kept.timeout) == (samples[0].pk, services.job_timeout(samples[0]))
    jobs = queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]
    assert sorted(job.id for job in jobs) == sorted(services.job_id(s.pk) for s in samples[1:3])
    assert Evaluation.objects.get(pk=samples[0].pk).held is False  # counted in alice's window


def test_nothing_is_kept_while_a_run_of_another_owner_waits_on_a_queue(alice, bob, window):
    samples = held_samples(alice, 2)
    make_evaluation(bob)  # queued and released: on a work queue
    with dispatch.keeping() as keep:
        keep.batch_id = samples[0].batch_id
        dispatch.release(alice.pk)
        assert keep.take() is None
    jobs = queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]
    assert sorted(job.id for job in jobs) == sorted(services.job_id(s.pk) for s in samples)


def test_nothing_is_kept_while_a_sample_of_another_batch_of_the_same_owner_waits(alice, window):
    this_batch = held_samples(alice, 2)
    other_batch = held_samples(alice, 1)
    with dispatch.keeping() as keep:
        keep.batch_id = this_batch[0].batch_id
        released = dispatch.release(alice.pk)
        assert keep.take() is None
    assert sorted(released) == sorted(str(s.pk) for s in this_batch + other_batch)


def test_the_batchs_own_released_samples_waiting_on_the_queue_do_not_stop_the_keep(alice, window):
    samples = held_samples(alice, 5)
    dispatch.release(alice.pk)  # three on the queue, as at the batch's start
    Evaluation.objects.filter(pk=samples[0].pk).update(status=Status.SUCCEEDED)
    with dispatch.keeping() as keep:
        keep.batch_id = samples[0].batch_id
        assert dispatch.release(alice.pk) == [str(samples[3].pk)]
        assert keep.take().evaluation_id == samples[3].pk


def test_a_kept_sample_the_job_did_not_take_is_enqueued_when_keeping_ends(alice, window):
    samples = held_samples(alice, 1)
    with dispatch.keeping() as keep:
        keep.batch_id = samples[0].batch_id
        dispatch.release(alice.pk)
        assert queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]] == []
    (job,) = queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]
    assert job.id == services.job_id(samples[0].pk)


def test_a_release_outside_a_run_that_reuses_a_sandbox_keeps_nothing(alice, window):
    samples = held_samples(alice, 2)
    with dispatch.keeping() as keep:  # the run did not say which batch it reuses a sandbox of
        dispatch.release(alice.pk)
        assert keep.take() is None
    assert len(queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]) == len(samples)


def test_a_kept_sample_redis_does_not_take_at_the_end_of_keeping_is_left_to_the_reconciler(alice, window, monkeypatch):
    (sample,) = held_samples(alice, 1)

    def refused(_jobs):
        raise ConnectionError("Redis went away")

    with dispatch.keeping() as keep:
        keep.batch_id = sample.batch_id
        dispatch.release(alice.pk)
        monkeypatch.setattr(services, "enqueue_jobs", refused)
    row = Evaluation.objects.get(pk=sample.pk)
    assert (row.status, row.held) == (Status.QUEUED, False)  # queued with no job: requeue_lost_jobs's


def test_a_stopping_worker_runs_no_kept_sample_and_enqueues_it(alice, window, monkeypatch):
    """``running.run`` with the run itself stood in for: its end keeps the batch's next sample while the
    worker is asked to stop; the job ends after that one run and the kept sample goes onto the queue."""
    first, second = held_samples(alice, 2)
    Evaluation.objects.filter(pk=first.pk).update(held=False)
    ran = []

    def end_while_the_worker_stops(run):
        ran.append(run.evaluation_id)
        run.keep.batch_id = first.batch_id
        worker.shutdown.set()
        dispatch.release(alice.pk)  # what the end's publication does
        return running.RunDisposition.FINISHED

    monkeypatch.setattr(running.EvaluationRun, "handle", end_while_the_worker_stops)
    try:
        assert running.run(str(first.pk)) == running.RunDisposition.FINISHED
    finally:
        worker.shutdown.clear()
    assert ran == [str(first.pk)]
    (job,) = queued_jobs()[QUEUE_FOR_PRIORITY[Priority.NORMAL]]
    assert job.id == services.job_id(second.pk)
