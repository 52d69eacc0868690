"""The retention policy: what ended more than RETENTION_DAYS ago goes, with everything recorded about
it; what is newer, still running or live stays; the metrics do not move when rows are pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.console import retention
from apps.console.tests.test_metrics import scrape
from apps.evaluations.models import Artifact, Evaluation, OutputChunk, Status
from apps.evaluations.tests.factories import add_artifact, add_chunk, make_evaluation
from apps.monitoring.models import Incident, IncidentStatus, ResourceSample, RunTiming
from apps.sessions.models import EndReason, Session, Step
from apps.sessions.models import Status as SessionStatus
from apps.sessions.tests.factories import add_step, make_session
from apps.tasks.models import Batch, BatchStatus

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def keep_thirty_days(settings):
    settings.RETENTION_DAYS = 30


def finished(owner, days_ago: float, status=Status.SUCCEEDED, **fields) -> Evaluation:
    """An evaluation that ran 2 s and ended ``days_ago``, with output, an artifact, samples and timings."""
    ended = timezone.now() - days_ago * DAY
    evaluation = make_evaluation(
        owner,
        status=status,
        created_at=ended - timedelta(seconds=3),
        started_at=ended - timedelta(seconds=2),
        finished_at=ended,
        duration_ms=2000,
        **fields,
    )
    add_chunk(evaluation, 1, b"hello\n")
    add_artifact(evaluation, "result.txt", b"42")
    ResourceSample.objects.create(evaluation_id=evaluation.pk, at=ended, cpu_percent=5, memory_bytes=1 << 20, pids=2)
    RunTiming.objects.create(evaluation_id=evaluation.pk, sandbox_start_ms=300)
    return evaluation


def test_alices_evaluation_older_than_the_policy_goes_with_everything_recorded_about_it(alice):
    old = finished(alice, days_ago=31)
    recent = finished(alice, days_ago=29)

    assert retention.prune()["evaluations"] == 1

    assert list(Evaluation.objects.values_list("pk", flat=True)) == [recent.pk]
    for model, field in ((OutputChunk, "evaluation_id"), (Artifact, "evaluation_id")):
        assert not model.objects.filter(**{field: old.pk}).exists()
        assert model.objects.filter(**{field: recent.pk}).exists()
    for model in (ResourceSample, RunTiming):
        assert not model.objects.filter(evaluation_id=old.pk).exists()
        assert model.objects.filter(evaluation_id=recent.pk).exists()


def test_a_run_that_is_still_queued_or_running_is_never_pruned_however_old(alice):
    long_ago = timezone.now() - 90 * DAY
    make_evaluation(alice, status=Status.QUEUED, created_at=long_ago)
    make_evaluation(alice, status=Status.RUNNING, created_at=long_ago, started_at=long_ago)
    assert retention.prune()["evaluations"] == 0
    assert Evaluation.objects.count() == 2


def test_with_the_policy_off_nothing_is_pruned(alice, settings):
    settings.RETENTION_DAYS = 0
    finished(alice, days_ago=3650)
    assert retention.prune() == {}
    assert Evaluation.objects.count() == 1


def test_a_pass_deletes_at_most_a_batch_oldest_first(alice, settings):
    settings.RETENTION_BATCH = 2
    runs = [finished(alice, days_ago=40 - n) for n in range(3)]
    assert retention.prune()["evaluations"] == 2
    assert list(Evaluation.objects.values_list("pk", flat=True)) == [runs[2].pk]
    assert retention.prune()["evaluations"] == 1


def test_a_final_batch_goes_with_all_its_samples_and_an_unfinished_one_stays(alice):
    ended = timezone.now() - 45 * DAY
    done = Batch.objects.create(owner=alice, total=2, status=BatchStatus.COMPLETED, finished_at=ended)
    going = Batch.objects.create(owner=alice, total=1, status=BatchStatus.RUNNING)
    samples = [finished(alice, days_ago=45, batch_id=done.pk) for _ in range(2)]
    waiting = finished(alice, days_ago=45, batch_id=going.pk)  # an old sample of a batch still running

    pruned = retention.prune()

    assert (pruned["batches"], pruned["evaluations"]) == (1, 0)
    assert not Batch.objects.filter(pk=done.pk).exists()
    assert not Evaluation.objects.filter(pk__in=[s.pk for s in samples]).exists()
    assert Evaluation.objects.filter(pk=waiting.pk).exists()


def test_an_ended_session_goes_with_its_transcript_and_a_live_one_stays(alice):
    ended = make_session(
        alice, status=SessionStatus.ENDED, end_reason=EndReason.DELETED, ended_at=timezone.now() - 31 * DAY
    )
    add_step(ended, 1)
    live = make_session(alice, created_at=timezone.now() - 31 * DAY)
    add_step(live, 1)

    assert retention.prune()["sessions"] == 1
    assert list(Session.objects.values_list("pk", flat=True)) == [live.pk]
    assert list(Step.objects.values_list("session_id", flat=True)) == [live.pk]


def test_a_run_or_session_with_a_safety_incident_keeps_its_evidence_however_old(alice):
    flagged = finished(alice, days_ago=400, status=Status.SAFETY_STOPPED)
    Incident.objects.create(evaluation_id=flagged.pk, owner=alice, status=IncidentStatus.RESOLVED)
    plain = finished(alice, days_ago=400)
    batch = Batch.objects.create(owner=alice, total=2, status=BatchStatus.COMPLETED, finished_at=flagged.finished_at)
    flagged_sample = finished(alice, days_ago=400, status=Status.SAFETY_STOPPED, batch_id=batch.pk)
    finished(alice, days_ago=400, batch_id=batch.pk)
    Incident.objects.create(evaluation_id=flagged_sample.pk, owner=alice)
    session = make_session(
        alice, status=SessionStatus.ENDED, end_reason=EndReason.DELETED, ended_at=timezone.now() - 400 * DAY
    )
    add_step(session, 1)
    Incident.objects.create(session_id=session.pk, owner=alice)

    assert retention.prune() == {"evaluations": 1, "batches": 0, "sessions": 0, "callback_deliveries": 0}

    assert not Evaluation.objects.filter(pk=plain.pk).exists()
    assert OutputChunk.objects.filter(evaluation_id=flagged.pk).exists()
    assert Artifact.objects.filter(evaluation_id=flagged.pk).exists()
    assert ResourceSample.objects.filter(evaluation_id=flagged.pk).exists()
    assert Batch.objects.filter(pk=batch.pk).exists() and Evaluation.objects.filter(batch_id=batch.pk).count() == 2
    assert Step.objects.filter(session_id=session.pk).exists()


def test_no_counter_or_histogram_moves_when_rows_are_pruned(alice, olivia_api):
    for days, status in ((40, Status.SUCCEEDED), (35, Status.FAILED), (1, Status.SUCCEEDED), (50, Status.TIMED_OUT)):
        finished(alice, days_ago=days, status=status)
    session = make_session(
        alice, status=SessionStatus.ENDED, end_reason=EndReason.IDLE_TIMEOUT, ended_at=timezone.now() - 40 * DAY
    )
    add_step(session, 1)
    add_step(session, 2)
    before = counters_and_histograms(scrape(olivia_api))

    assert retention.prune()["evaluations"] == 3
    assert retention.prune()["evaluations"] == 0  # nothing is carried twice

    assert counters_and_histograms(scrape(olivia_api)) == before
    assert Evaluation.objects.count() == 1


def counters_and_histograms(samples: dict) -> dict:
    names = (
        "crucible_evaluations_submitted_total",
        "crucible_evaluations_finished_total",
        "crucible_evaluation_duration_seconds_",
        "crucible_evaluation_queue_wait_seconds_",
        "crucible_sandbox_start_seconds_",
        "crucible_sessions_ended_total",
        "crucible_session_steps_total",
    )
    picked = {key: value for key, value in samples.items() if key[0].startswith(names) and value}
    assert any(key[0].startswith("crucible_evaluation_duration_seconds_bucket") for key in picked)
    return picked
