"""Fair dispatch: an owner's held batch samples go onto the work queues a window at a time, the most
urgent of the oldest first, each exactly once, whatever other owners have queued or running."""

from __future__ import annotations

import threading
import uuid

import django_rq
import pytest
from django.conf import settings
from django.db import connection

from apps.evaluations import dispatch, services
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
