"""`Authorization: Token <key>` against the API: works, stops at once when revoked, never stored in clear."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, hash_key
from apps.accounts.services import create_token, revoke_token

pytestmark = pytest.mark.django_db


def client_with(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_token_authenticates_its_owner(alice):
    _token, key = create_token(alice, "laptop")
    response = client_with(key).get("/api/v1/me/")
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert body["auth"] == "token"
    assert body["token"]["name"] == "laptop"
    assert body["is_operator"] is False
    assert body["limits"]["submissions_per_minute"] == 30


def test_a_revoked_token_stops_working_at_once(alice):
    token, key = create_token(alice, "laptop")
    client = client_with(key)
    assert client.get("/api/v1/me/").status_code == 200
    revoke_token(token, actor=alice)
    response = client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "revoked" in response.json()["error"]


def test_an_unknown_or_malformed_token_is_401(alice):
    assert client_with("cru_not-a-real-key").get("/api/v1/me/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token two parts")
    assert client.get("/api/v1/me/").status_code == 401


def test_anonymous_is_401(anonymous_api):
    assert anonymous_api.get("/api/v1/me/").status_code == 401


def test_the_key_is_not_stored_in_clear(alice):
    token, key = create_token(alice, "laptop")
    row = ApiToken.objects.values().get(pk=token.pk)
    assert key not in {str(value) for value in row.values()}
    assert row["key_hash"] == hash_key(key)
    assert row["prefix"] == key[:12]


def test_last_use_is_recorded(alice):
    token, key = create_token(alice, "laptop")
    assert token.last_used_at is None
    client_with(key).get("/api/v1/me/")
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert timezone.now() - token.last_used_at < timedelta(seconds=10)


def test_a_token_of_an_inactive_user_is_refused(alice):
    _token, key = create_token(alice, "laptop")
    alice.is_active = False
    alice.save()
    assert client_with(key).get("/api/v1/me/").status_code == 401


def test_me_tells_an_operator_apart(olivia):
    _token, key = create_token(olivia, "ops")
    assert client_with(key).get("/api/v1/me/").json()["is_operator"] is True


def test_the_schema_describes_token_auth_and_me(alice):
    _token, key = create_token(alice, "laptop")
    response = client_with(key).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["tokenAuth"]["name"] == "Authorization"
    assert "/api/v1/me/" in schema["paths"]
