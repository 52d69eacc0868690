"""Batches through the API, without running them: accepted whole or refused whole with a clear error,
held and released a few at a time (fair dispatch), visible to their owner only, cancelled whole."""

import django_rq
import pytest
from django.conf import settings

from apps.evaluations.models import Evaluation, Status
from apps.tasks.models import Batch
from apps.tasks.tests.factories import check_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]

URL = "/api/v1/batches/"
SOLUTION = "    return x * x\n"


@pytest.fixture
def square(olivia):
    return check_task(olivia, public=True)


def queued_job_ids() -> list[str]:
    return [job_id for name in settings.RQ_QUEUES for job_id in django_rq.get_queue(name).job_ids]


def test_a_batch_of_completions_becomes_one_held_evaluation_per_sample(alice_api, square, settings):
    settings.FAIR_SHARE_WINDOW = 2
    body = {"task": square.slug, "samples": [{"code": SOLUTION}] * 5, "samples_are": "completions", "k": [1, 2]}
    response = alice_api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    batch = response.json()
    assert (batch["status"], batch["total"], batch["counts"]["queued"]) == ("queued", 5, 5)
    samples = Evaluation.objects.filter(batch_id=batch["id"]).order_by("created_at")
    assert [s.metadata["sample"] for s in samples] == [0, 1, 2, 3, 4]
    first = samples[0]
    assert first.code == square.prompt + SOLUTION and first.task == square.slug and first.task_version == 1
    assert first.tests_hidden is True and first.tests == square.tests
    assert samples.filter(held=False).count() == 2  # the fair-share window is on the queues
    assert len(queued_job_ids()) == 2
    detail = alice_api.get(f"/api/v1/evaluations/{first.pk}/").json()
    assert (detail["batch"], detail["task"]) == (batch["id"], square.slug)
    assert "tests" not in detail and "assert candidate" not in str(detail)


def test_another_users_single_run_waits_behind_at_most_the_window_of_a_big_batch(alice_api, bob_api, square, settings):
    settings.FAIR_SHARE_WINDOW = 3
    big = {"task": square.slug, "samples": [{"code": SOLUTION}] * 200}
    assert alice_api.post(URL, big, format="json").status_code == 201
    run = bob_api.post("/api/v1/evaluations/", {"code": "print(1)"}, format="json").json()
    jobs = queued_job_ids()
    assert jobs.index(f"evaluation-{run['id']}") <= 3
    assert Evaluation.objects.filter(held=True).count() == 197


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "demo/square", "samples": []}, "samples"),
        ({"task": "demo/square", "samples": "print(1)"}, "samples"),
        ({"task": "demo/square", "samples": [{"code": ""}]}, "samples[0].code"),
        ({"task": "demo/square", "samples": [{"code": 5}]}, "samples[0].code"),
        ({"task": "demo/square", "samples": ["print(1)"]}, "samples[0]"),
        ({"task": "no/such-task", "samples": [{"code": "x"}]}, "task"),
        ({"samples": [{"code": "x"}]}, "samples[0].task"),
        ({"task": "demo/square", "samples": [{"code": "x"}], "k": [0]}, "k"),
        ({"task": "demo/square", "samples": [{"code": "x"}], "k": 1}, "k"),
        ({"task": "demo/square", "samples": [{"code": "x"}], "samples_are": "poems"}, "samples_are"),
        ({"task": "demo/square", "samples": [{"code": "x"}], "callback_url": "http://127.0.0.1/hook"}, "callback_url"),
        ({"task": "demo/square", "samples": [{"code": "x"}], "extra": 1}, "extra"),
    ],
)
def test_bad_batches_get_a_400_naming_the_field_and_create_nothing(alice_api, square, body, field):
    response = alice_api.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json() and response.json()["detail"]
    assert not Batch.objects.exists() and not Evaluation.objects.exists()


def test_one_sample_more_than_a_batch_may_hold_is_a_413_and_creates_nothing(alice_api, square, settings):
    body = {"task": square.slug, "samples": [{"code": "x"}] * (settings.BATCH_MAX_SAMPLES + 1)}
    response = alice_api.post(URL, body, format="json")
    assert response.status_code == 413 and "at most" in response.json()["samples"][0]
    assert not Evaluation.objects.exists()


def test_a_batch_over_the_waiting_samples_quota_is_refused_whole_with_a_429(alice_api, square, settings):
    settings.QUEUED_SAMPLES_PER_USER = 10
    assert alice_api.post(URL, {"task": square.slug, "samples": [{"code": "x"}] * 6}, format="json").status_code == 201
    response = alice_api.post(URL, {"task": square.slug, "samples": [{"code": "x"}] * 6}, format="json")
    assert response.status_code == 429 and "waiting samples" in response.json()["detail"]
    assert Evaluation.objects.count() == 6


def test_a_big_batch_does_not_count_against_the_single_run_quota(alice_api, square, settings):
    settings.QUOTA_MAX_ACTIVE = 3
    assert alice_api.post(URL, {"task": square.slug, "samples": [{"code": "x"}] * 20}, format="json").status_code == 201
    assert alice_api.post("/api/v1/evaluations/", {"code": "print(1)"}, format="json").status_code == 201


def test_bob_never_sees_alices_batch(alice_api, bob_api, square):
    batch = alice_api.post(URL, {"task": square.slug, "samples": [{"code": "x"}]}, format="json").json()
    for path in (f"{URL}{batch['id']}/", f"{URL}{batch['id']}/results/", f"{URL}{batch['id']}/results/?format=jsonl"):
        assert bob_api.get(path).status_code == 404
    assert bob_api.delete(f"{URL}{batch['id']}/").status_code == 404
    assert bob_api.get(URL).json()["count"] == 0


def test_cancelling_a_batch_ends_every_sample_that_had_not_ended(alice_api, square):
    batch = alice_api.post(URL, {"task": square.slug, "samples": [{"code": "x"}] * 30}, format="json").json()
    response = alice_api.delete(f"{URL}{batch['id']}/")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert Evaluation.objects.filter(batch_id=batch["id"]).exclude(status=Status.CANCELLED).count() == 0
    assert response.json()["counts"]["cancelled"] == 30


def test_results_list_every_sample_and_export_the_whole_batch_as_jsonl(alice_api, square):
    batch = alice_api.post(URL, {"task": square.slug, "samples": [{"code": "x"}] * 3}, format="json").json()
    page = alice_api.get(f"{URL}{batch['id']}/results/").json()
    assert page["count"] == 3 and page["results"][0]["task"] == square.slug
    export = alice_api.get(f"{URL}{batch['id']}/results/?format=jsonl")
    assert export.status_code == 200 and export["Content-Type"] == "application/x-ndjson"
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert len(lines) == 3


def test_a_batch_body_larger_than_djangos_limit_is_accepted_up_to_the_batch_limit(alice_api, square, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = {"task": square.slug, "samples": [{"code": "x" * 1000}] * 200}  # about 200 KB
    assert alice_api.post(URL, body, format="json").status_code == 201
    assert alice_api.post("/api/v1/evaluations/", {"code": "x" * 100_000}, format="json").status_code == 413
    settings.BATCH_MAX_BODY_BYTES = 100 * 1024
    response = alice_api.post(URL, body, format="json")
    assert response.status_code == 413 and "larger than 102400 bytes" in response.json()["detail"]
    assert Evaluation.objects.count() == 200
