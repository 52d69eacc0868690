"""WS /ws/batches/{id}/: the owner (and operators) get progress as samples end, then the end; others 4404."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.evaluations import dispatch, publisher
from apps.evaluations import services as services_of_evaluations
from apps.evaluations.models import CallbackDelivery, Evaluation, Reason, Status
from apps.evaluations.tests.test_websocket import HOST, ORIGIN, close_code, session_cookie
from apps.tasks import progress, services
from apps.tasks.tests.factories import check_task
from crucible.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    yield
    await database_sync_to_async(connections.close_all)()


async def connect(batch_id, user):
    headers = [HOST, ORIGIN, (b"cookie", await database_sync_to_async(session_cookie)(user))]
    communicator = WebsocketCommunicator(application, f"/ws/batches/{batch_id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


def a_batch(owner, size=2):
    task = check_task(owner)
    return services.submit_batch(owner, {"task": task.slug, "samples": [{"code": "print(1)"}] * size})


def end_sample(evaluation: Evaluation, passed: bool) -> None:
    """What the worker records at a sample's end, and its publication (no engine needed here)."""
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Status.SUCCEEDED if passed else Status.FAILED,
        reason=Reason.EXIT if passed else Reason.TESTS_FAILED,
        passed=passed,
        finished_at=timezone.now(),
    )
    evaluation.refresh_from_db()
    publisher.publish_end(evaluation)


async def test_alice_follows_her_batch_from_queued_to_its_end(alice):
    batch = await database_sync_to_async(a_batch)(alice)
    communicator = await connect(batch.pk, alice)
    first = await communicator.receive_json_from(timeout=5)
    assert (first["type"], first["status"], first["total"], first["ended"]) == ("progress", "queued", 2, 0)
    samples = await database_sync_to_async(lambda: list(Evaluation.objects.filter(batch_id=batch.pk)))()
    await database_sync_to_async(end_sample)(samples[0], True)
    progress = await communicator.receive_json_from(timeout=5)
    assert (progress["type"], progress["ended"], progress["passed"]) == ("progress", 1, 1)
    await database_sync_to_async(end_sample)(samples[1], False)
    end = await communicator.receive_json_from(timeout=5)
    assert (end["type"], end["status"], end["passed"], end["pass_at_k"]) == ("end", "completed", 1, {"1": 0.5})
    assert await close_code(communicator) == 1000


async def test_bob_is_closed_with_4404_for_alices_batch_as_for_a_missing_one(alice, bob):
    batch = await database_sync_to_async(a_batch)(alice)
    for batch_id in (batch.pk, uuid.uuid4(), "not-a-uuid"):
        communicator = await connect(batch_id, bob)
        assert await close_code(communicator) == 4404


async def test_an_operator_may_follow_any_batch(alice, olivia):
    batch = await database_sync_to_async(a_batch)(alice)
    communicator = await connect(batch.pk, olivia)
    assert (await communicator.receive_json_from(timeout=5))["total"] == 2
    await communicator.disconnect()


async def test_a_cancelled_batch_sends_its_end_at_once(alice):
    batch = await database_sync_to_async(a_batch)(alice)
    await database_sync_to_async(services.cancel_batch)(batch, actor=alice)
    communicator = await connect(batch.pk, alice)
    end = await communicator.receive_json_from(timeout=5)
    assert (end["type"], end["status"], end["counts"]["cancelled"]) == ("end", "cancelled", 2)
    assert await close_code(communicator) == 1000


def test_a_batch_with_a_callback_url_schedules_one_batch_finished_delivery_at_its_end(alice, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.0/8"]
    task = check_task(alice)
    batch = services.submit_batch(
        alice, {"task": task.slug, "samples": [{"code": "x"}] * 2, "callback_url": "http://127.0.0.1:9/hook"}
    )
    samples = list(Evaluation.objects.filter(batch_id=batch.pk))
    end_sample(samples[0], True)
    assert not CallbackDelivery.objects.filter(event_type="batch.finished").exists()
    end_sample(samples[1], True)
    delivery = CallbackDelivery.objects.get(event_type="batch.finished", subject_id=str(batch.pk))
    body = json.loads(delivery.body)
    assert (body["type"], body["batch"]["status"], body["batch"]["passed"]) == ("batch.finished", "completed", 2)


def test_a_sample_ending_while_others_run_reads_only_whether_any_does_until_progress_is_due(alice):
    batch = a_batch(alice, size=3)
    first, second, third = Evaluation.objects.filter(batch_id=batch.pk).order_by("created_at", "id")
    end_sample(first, True)  # the batch's first progress: published
    Evaluation.objects.filter(pk=second.pk).update(status=Status.SUCCEEDED, passed=True, finished_at=timezone.now())
    progress.due(batch.pk)  # progress was just published: the next is not due for a second
    with CaptureQueriesContext(connection) as queries:
        progress.on_evaluation_ended(Evaluation, evaluation=second)
    assert len(queries) == 1 and "tasks_batch" not in queries[0]["sql"]
    end_sample(third, False)  # the last: the batch ends whatever the second's timing
    batch.refresh_from_db()
    assert (batch.status, batch.finished_at is not None) == ("completed", True)


def test_a_sample_whose_job_keeps_the_next_sample_of_its_batch_reads_nothing_until_progress_is_due(alice):
    """The worker's job holds the batch's next sample (released, kept to run in the same sandbox): the
    batch is busy, so the end of a sample asks the database nothing."""
    batch = a_batch(alice, size=3)
    first, second, third = Evaluation.objects.filter(batch_id=batch.pk).order_by("created_at", "id")
    Evaluation.objects.filter(pk=first.pk).update(status=Status.SUCCEEDED, passed=True, finished_at=timezone.now())
    progress.due(batch.pk)  # progress was just published: the next is not due for a second
    with dispatch.keeping() as keep:
        keep.batch_id = batch.pk
        keep.kept = services_of_evaluations.RunJob("default", third.pk, 300)
        with CaptureQueriesContext(connection) as queries:
            progress.on_evaluation_ended(Evaluation, evaluation=first)
        keep.take()
    assert queries.captured_queries == []
