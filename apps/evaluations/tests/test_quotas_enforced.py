"""Quotas as a researcher meets them: 429 with Retry-After through the API and the form, and group quotas."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from apps.accounts import quotas
from apps.accounts.models import Quota
from apps.evaluations import services
from apps.evaluations.models import Evaluation
from apps.evaluations.tests.helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters(alice, bob):
    """The rate counters live in Redis, keyed by user id, which the next test reuses."""
    for user in (alice, bob):
        quotas.reset_submission_quota(user)
    yield
    for user in (alice, bob):
        quotas.reset_submission_quota(user)


def retry_after(response) -> int:
    value = int(response["Retry-After"])
    assert 1 <= value <= 60, value
    return value


def test_over_her_rate_alice_gets_429_with_retry_after_and_nothing_is_stored(alice_api, alice):
    Quota.objects.create(user=alice, submissions_per_minute=2)
    assert submit(alice_api).status_code == 201
    assert submit(alice_api).status_code == 201
    response = submit(alice_api)
    assert response.status_code == 429
    retry_after(response)
    assert "2 submissions per minute" in response.json()["error"]
    assert Evaluation.objects.filter(owner=alice).count() == 2


def test_with_too_many_active_alice_gets_429_until_one_ends(alice_api, alice):
    Quota.objects.create(user=alice, max_active=1)
    first = submit(alice_api)
    assert first.status_code == 201
    refused = submit(alice_api)
    assert refused.status_code == 429
    retry_after(refused)
    services.cancel(Evaluation.objects.get(pk=first.json()["id"]))
    assert submit(alice_api).status_code == 201


def test_a_group_quota_applies_to_each_member_on_their_own_count(alice_api, bob_api, alice, bob):
    researchers = Group.objects.get(name="Researchers")
    assert {alice, bob} <= set(researchers.user_set.all())
    Quota.objects.create(group=researchers, submissions_per_minute=1)
    assert submit(alice_api).status_code == 201
    assert submit(alice_api).status_code == 429
    assert submit(bob_api).status_code == 201  # bob has his own minute, not alice's
    assert submit(bob_api).status_code == 429


def test_a_more_generous_group_lifts_its_members_above_the_researchers_quota(bob_api, bob):
    Quota.objects.create(group=Group.objects.get(name="Researchers"), submissions_per_minute=1)
    power = Group.objects.create(name="Power users")
    power.user_set.add(bob)
    Quota.objects.create(group=power, submissions_per_minute=3)
    assert [submit(bob_api).status_code for _ in range(4)] == [201, 201, 201, 429]


def test_alices_own_quota_beats_her_groups(alice_api, alice):
    Quota.objects.create(group=Group.objects.get(name="Researchers"), submissions_per_minute=5)
    Quota.objects.create(user=alice, submissions_per_minute=1)
    assert [submit(alice_api).status_code for _ in range(2)] == [201, 429]


def submit_the_form_twice(user, **quota):
    """Sign ``user`` in with ``quota``, submit the form twice; the first is accepted, the second answered."""
    Quota.objects.create(user=user, **quota)
    client = Client()
    client.force_login(user)
    body = {"code": "print(1)\n", "language": "python", "priority": "normal"}
    assert client.post(reverse("evaluations:new"), {**body, "idempotency_key": "first"}).status_code == 302
    return client.post(reverse("evaluations:new"), {**body, "idempotency_key": "second"})


def test_over_quota_the_form_answers_429_with_retry_after_and_says_when(alice):
    response = submit_the_form_twice(alice, submissions_per_minute=1)
    assert response.status_code == 429
    seconds = retry_after(response)
    page = response.content.decode()
    assert "1 submissions per minute" in page or "1 submission per minute" in page
    assert f"try again in {seconds} s" in page
    assert "print(1)" in page  # the code she typed is still in the form
    assert Evaluation.objects.filter(owner=alice).count() == 1


def test_with_too_many_active_the_forms_retry_after_matches_what_it_says(alice):
    response = submit_the_form_twice(alice, max_active=1)
    assert response.status_code == 429
    assert f"try again in {retry_after(response)} s" in response.content.decode()
