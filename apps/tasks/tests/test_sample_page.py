"""A sample's evaluation page shows its per-test verdicts; the tests' details only to who may see them."""

import pytest
from django.test import Client

from apps.evaluations.models import Evaluation, Reason, Status, TestResult, TestStatus
from apps.tasks import services
from apps.tasks.tests.factories import check_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


def judged_sample(submitter, task) -> Evaluation:
    batch = services.submit_batch(submitter, {"task": task.slug, "samples": [{"code": "def square(x): return x"}]})
    sample = Evaluation.objects.get(batch_id=batch.pk)
    Evaluation.objects.filter(pk=sample.pk).update(status=Status.FAILED, reason=Reason.TESTS_FAILED, passed=False)
    TestResult.objects.create(
        evaluation=sample,
        position=0,
        name="square",
        category="functional",
        status=TestStatus.FAILED,
        passed=False,
        duration_ms=31,
        exit_code=1,
        message="exit code 1 (AssertionError)",
        detail="stderr (end):\n    assert candidate(3) == 9\nAssertionError",
    )
    return sample


def page(user, sample) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(f"/evaluations/{sample.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_bob_sees_the_verdicts_of_his_sample_but_not_the_hidden_tests_detail(olivia, bob):
    sample = judged_sample(bob, check_task(olivia, public=True))
    html = page(bob, sample)
    assert "exit code 1 (AssertionError)" in html and "31 ms" in html
    assert "assert candidate" not in html and "These tests are hidden" in html


def test_the_tasks_owner_sees_the_detail_of_her_own_samples(alice):
    sample = judged_sample(alice, check_task(alice))
    html = page(alice, sample)
    assert "assert candidate(3) == 9" in html and "These tests are hidden" not in html
