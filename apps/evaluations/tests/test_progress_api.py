"""``progress`` in GET /evaluations/{id}/: a queued run's place and estimated wait, a running run's
elapsed time, output so far and peak memory; null once it ended."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.evaluations.models import Status
from apps.evaluations.tests.factories import add_chunk, make_evaluation
from apps.monitoring.models import ResourceSample

pytestmark = pytest.mark.django_db


def progress_of(api, evaluation) -> dict | None:
    return api.get(f"/api/v1/evaluations/{evaluation.pk}/").json()["progress"]


def finished_run(owner, seconds: int):
    now = timezone.now()
    return make_evaluation(
        owner,
        status=Status.SUCCEEDED,
        finished_at=now,
        started_at=now - timedelta(seconds=seconds),
        duration_ms=seconds * 1000,
    )


def test_a_queued_run_counts_the_runs_a_worker_takes_before_it(alice_api, alice, bob):
    now = timezone.now()
    make_evaluation(bob, created_at=now - timedelta(minutes=5))  # older, same queue: ahead
    make_evaluation(bob, created_at=now + timedelta(minutes=1), priority="high")  # newer but more urgent: ahead
    make_evaluation(bob, created_at=now - timedelta(minutes=9), priority="low")  # older but less urgent: behind
    make_evaluation(bob, created_at=now - timedelta(minutes=9), held=True)  # another owner's held sample: behind
    mine = make_evaluation(alice, created_at=now)
    progress = progress_of(alice_api, mine)
    assert progress["kind"] == "queued"
    assert progress["position"] == 3
    assert progress["queued_total"] == 5


def test_the_estimate_comes_from_recent_run_durations(alice_api, alice, bob):
    for seconds in (10, 30, 50):
        finished_run(bob, seconds)  # typically 30 s
    make_evaluation(bob, created_at=timezone.now() - timedelta(minutes=1))
    make_evaluation(bob, created_at=timezone.now() - timedelta(minutes=1))
    make_evaluation(bob, status=Status.RUNNING)
    mine = make_evaluation(alice)
    progress = progress_of(alice_api, mine)
    assert progress["typical_run_s"] == 30
    assert progress["running"] == 1
    # Two ahead sharing one busy slot, 30 s each, plus about half of the run going on now.
    assert progress["estimated_wait_s"] == 75


def test_without_recent_runs_there_is_no_estimate(alice_api, alice):
    progress = progress_of(alice_api, make_evaluation(alice))
    assert progress["position"] == 1
    assert progress["estimated_wait_s"] is None


def test_a_running_run_reports_elapsed_time_output_and_peak_memory(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING, started_at=timezone.now() - timedelta(seconds=12))
    add_chunk(evaluation, 1, b"x" * 1000)
    add_chunk(evaluation, 2, b"y" * 24, "stderr")
    for memory in (10_000_000, 30_000_000, 20_000_000):
        ResourceSample.objects.create(
            evaluation_id=evaluation.pk,
            at=timezone.now(),
            cpu_percent=1,
            memory_bytes=memory,
            pids=1,
            output_bytes_per_s=0,
        )
    progress = progress_of(alice_api, evaluation)
    assert progress["kind"] == "running"
    assert 12 <= progress["elapsed_s"] < 60
    assert progress["timeout_s"] == evaluation.timeout_s
    assert progress["output_bytes"] == 1024
    assert progress["peak_memory_bytes"] == 30_000_000
    assert progress["memory_limit_bytes"] == 128 * 1024 * 1024


def test_a_running_run_without_samples_has_no_peak_yet(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    progress = progress_of(alice_api, evaluation)
    assert progress["output_bytes"] == 0
    assert progress["peak_memory_bytes"] is None


def test_a_finished_run_has_no_progress(alice_api, alice):
    assert progress_of(alice_api, finished_run(alice, 3)) is None


def test_the_progress_card_is_only_for_those_who_may_see_the_run(client, alice, bob):
    evaluation = make_evaluation(alice)
    client.force_login(bob)
    assert client.get(f"/evaluations/{evaluation.pk}/progress/").status_code == 404
    client.force_login(alice)
    response = client.get(f"/evaluations/{evaluation.pk}/progress/")
    assert response.status_code == 200
    assert b"position 1" in response.content
