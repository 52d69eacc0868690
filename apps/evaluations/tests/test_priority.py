"""Adversarial case 32: high priority jumps every queue, so it is a role or quota decision.

Operators may always submit with ``priority: high``; a researcher only when their quota (their own
row, or one of their groups') allows it. Anyone else gets a 403 naming the field, and nothing is
stored or queued. Low and normal stay everyone's choice.
"""

from __future__ import annotations

import django_rq
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from apps.accounts import quotas
from apps.accounts.models import Quota
from apps.evaluations.models import Evaluation, Priority
from apps.evaluations.tests.factories import make_evaluation
from apps.evaluations.tests.helpers import submit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_queues")]

HIGH_QUEUE = next(iter(settings.RQ_QUEUES))  # the most urgent queue


@pytest.fixture(autouse=True)
def fresh_counters(alice, bob, olivia):
    for user in (alice, bob, olivia):
        quotas.reset_submission_quota(user)
    yield
    for user in (alice, bob, olivia):
        quotas.reset_submission_quota(user)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_body(priority: str) -> dict:
    return {"code": "print(1)", "language": "python", "priority": priority}


def test_alice_asking_for_high_priority_gets_403_naming_the_field_and_nothing_is_queued(
    alice_api, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as enqueued:
        for _ in range(5):  # as many times as she likes: the answer stays the same
            response = submit(alice_api, priority="high")
            assert response.status_code == 403
            assert "priority" in response.json()
            assert "High priority is for operators" in response.json()["error"]
    assert not Evaluation.objects.exists()
    assert enqueued == []


def test_a_refused_priority_does_not_use_up_her_rate(alice_api, alice):
    Quota.objects.create(user=alice, submissions_per_minute=1)
    assert submit(alice_api, priority="high").status_code == 403
    assert submit(alice_api, priority="normal").status_code == 201


@pytest.mark.parametrize("priority", ["low", "normal"])
def test_low_and_normal_stay_everyones_choice(alice_api, priority):
    response = submit(alice_api, priority=priority)
    assert response.status_code == 201
    assert response.json()["priority"] == priority


def test_olivia_the_operator_may_submit_with_high_priority(olivia_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(olivia_api, priority="high")
    assert response.status_code == 201
    evaluation = Evaluation.objects.get(pk=response.json()["id"])
    assert (evaluation.priority, evaluation.queue_name) == (Priority.HIGH, HIGH_QUEUE)
    assert django_rq.get_queue(HIGH_QUEUE).count == 1


def test_a_quota_can_allow_high_priority_for_one_user(alice_api, bob_api, alice):
    Quota.objects.create(user=alice, high_priority=True)
    assert submit(alice_api, priority="high").status_code == 201
    assert submit(bob_api, priority="high").status_code == 403


def test_a_group_quota_can_allow_it_and_her_own_row_can_take_it_back(alice_api, alice):
    group = Group.objects.create(name="Priority researchers")
    alice.groups.add(group)
    Quota.objects.create(group=group, high_priority=True)
    assert submit(alice_api, priority="high").status_code == 201
    Quota.objects.create(user=alice, high_priority=False)
    assert submit(alice_api, priority="high").status_code == 403


def test_me_tells_the_user_whether_they_may_use_high_priority(alice_api, alice):
    assert alice_api.get("/api/v1/me/").json()["limits"]["high_priority"] is False
    Quota.objects.create(user=alice, high_priority=True)
    assert alice_api.get("/api/v1/me/").json()["limits"]["high_priority"] is True


# --- the form -------------------------------------------------------------------------------


def test_the_form_offers_high_only_to_those_who_may_use_it(alice, olivia):
    alice_page = signed_in(alice).get(reverse("evaluations:new")).content.decode()
    olivia_page = signed_in(olivia).get(reverse("evaluations:new")).content.decode()
    assert 'value="high"' not in alice_page
    assert "High priority is for operators and users whose quota allows it." in alice_page
    assert 'value="high"' in olivia_page


def test_a_crafted_form_post_with_high_is_403_with_the_message_on_the_field(alice):
    response = signed_in(alice).post(reverse("evaluations:new"), form_body("high"))
    assert response.status_code == 403
    assert "High priority is for operators and for users whose quota allows it" in response.content.decode()
    assert not Evaluation.objects.exists()


def test_the_form_takes_high_from_an_operator(olivia):
    response = signed_in(olivia).post(reverse("evaluations:new"), form_body("high"))
    assert response.status_code == 302
    assert Evaluation.objects.get(owner=olivia).priority == Priority.HIGH


def test_running_it_again_after_her_quota_was_taken_back_is_refused_clearly(alice):
    """ "Run again" copies the priority: a quota taken back is not a way around it."""
    quota = Quota.objects.create(user=alice, high_priority=True)
    original = make_evaluation(alice, priority=Priority.HIGH)
    quota.high_priority = False
    quota.save()
    client = signed_in(alice)
    response = client.post(reverse("evaluations:rerun", args=[original.pk]), follow=True)
    assert "High priority is for operators" in response.content.decode()
    assert Evaluation.objects.count() == 1


def test_editing_a_copy_of_a_high_priority_run_offers_normal_once_the_quota_is_taken_back(alice):
    original = make_evaluation(alice, priority=Priority.HIGH)
    page = signed_in(alice).get(reverse("evaluations:new"), {"from": original.pk}).content.decode()
    assert '<option value="normal" selected>' in page
