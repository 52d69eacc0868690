"""POST /api/v1/me/webhook-secret/: a new secret, shown once and never again; /me/ says only whether one is set."""

import pytest

from apps.accounts.models import WebhookSecret
from apps.accounts.services import webhook_secret_of
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/api/v1/me/webhook-secret/"


def test_alice_makes_a_webhook_secret_and_sees_it_once(alice, alice_api):
    response = alice_api.post(URL)
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    secret = response.json()["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert webhook_secret_of(alice) == secret
    me = alice_api.get("/api/v1/me/")
    assert me.json()["webhook_secret_set"] is True
    assert me.json()["webhook_secret_created_at"]
    assert secret not in me.content.decode()


def test_the_secret_cannot_be_read_back(alice_api):
    secret = alice_api.post(URL).json()["webhook_secret"]
    for method in (alice_api.get, alice_api.put, alice_api.patch):
        response = method(URL)
        assert response.status_code == 405
        assert secret not in response.content.decode()


def test_a_new_secret_replaces_the_old_one_at_once(alice, alice_api):
    old = alice_api.post(URL).json()["webhook_secret"]
    new = alice_api.post(URL).json()["webhook_secret"]
    assert new != old
    assert webhook_secret_of(alice) == new
    assert WebhookSecret.objects.filter(user=alice).count() == 1


def test_before_any_secret_me_says_none_is_set(alice_api):
    assert alice_api.get("/api/v1/me/").json()["webhook_secret_set"] is False


def test_a_user_without_a_secret_still_gets_signed_deliveries_with_one_made_for_her(alice, alice_api):
    made = webhook_secret_of(alice)
    assert made.startswith("whsec_")
    assert webhook_secret_of(alice) == made
    assert alice_api.get("/api/v1/me/").json()["webhook_secret_set"] is True


def test_each_user_has_their_own_secret(alice_api, bob_api, alice, bob):
    assert alice_api.post(URL).json()["webhook_secret"] != bob_api.post(URL).json()["webhook_secret"]


def test_making_a_secret_is_audited_without_the_secret(alice_api):
    secret = alice_api.post(URL).json()["webhook_secret"]
    event = AuditEvent.objects.get(action="webhook_secret.made")
    assert event.actor_name == "alice"
    assert secret not in str(event.details) and secret not in event.target


def test_anonymous_gets_no_secret(anonymous_api):
    assert anonymous_api.post(URL).status_code in (401, 403)
    assert WebhookSecret.objects.count() == 0
