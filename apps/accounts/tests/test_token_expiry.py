"""API tokens may expire: chosen on the tokens page (never, 30 or 90 days, a date) or on the command line;
an expired token is refused with a 401 that says so, and the tokens page shows it."""

from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.forms import expiry_for
from apps.accounts.models import ApiToken
from apps.accounts.services import create_token

pytestmark = pytest.mark.django_db

TOKENS = "/api-tokens/"


def client_with(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def expire(token):
    token.expires_at = timezone.now() - timedelta(seconds=1)
    token.save(update_fields=["expires_at"])


def test_a_token_works_until_its_expiry_then_gets_a_401_saying_it_expired(alice):
    token, key = create_token(alice, "laptop", expires_at=timezone.now() + timedelta(days=30))
    assert client_with(key).get("/api/v1/me/").status_code == 200
    expire(token)
    response = client_with(key).get("/api/v1/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "expired on" in response.json()["error"]
    assert "/api-tokens/" in response.json()["error"]


def test_an_expired_token_is_not_active_and_does_not_count_towards_the_limit(alice):
    token, _key = create_token(alice, "laptop", expires_at=timezone.now() + timedelta(days=1))
    assert ApiToken.objects.active().filter(pk=token.pk).exists()
    expire(token)
    assert not ApiToken.objects.active().filter(pk=token.pk).exists()
    token.refresh_from_db()
    assert (token.is_active, token.status) == (False, "expired")
    assert ApiToken.authenticate(_key) is None


def test_me_shows_the_tokens_expiry(alice):
    _token, key = create_token(alice, "ci", expires_at=datetime(2099, 1, 1, tzinfo=UTC))
    assert client_with(key).get("/api/v1/me/").json()["token"]["expires_at"].startswith("2099-01-01T00:00:00")
    _token, key = create_token(alice, "forever")
    assert client_with(key).get("/api/v1/me/").json()["token"]["expires_at"] is None


@pytest.mark.parametrize("choice, days", [("30", 30), ("90", 90)])
def test_the_page_offers_30_and_90_days(client, alice, choice, days):
    client.force_login(alice)
    response = client.post(TOKENS, {"name": "bench", "expires": choice})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=days))) < timedelta(minutes=1)
    assert "It expires on" in response.content.decode()


def test_the_page_offers_never(client, alice):
    client.force_login(alice)
    response = client.post(TOKENS, {"name": "forever", "expires": "never"})
    assert response.status_code == 200
    assert ApiToken.objects.get(user=alice).expires_at is None
    assert "never expires" in response.content.decode()


def test_a_custom_date_means_usable_through_that_day(client, alice):
    client.force_login(alice)
    on = timezone.now().date() + timedelta(days=10)
    response = client.post(TOKENS, {"name": "conference", "expires": "custom", "expires_on": on.isoformat()})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert token.expires_at == datetime.combine(on + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


@pytest.mark.parametrize(
    "expires_on, error",
    [
        ("", "Choose the date the token expires."),
        ("2001-01-01", "Choose today or a later date."),
        ("9999-12-31", "within five years"),
        ("not-a-date", "Enter a valid date."),
    ],
)
def test_a_bad_custom_date_is_a_400_with_the_error(client, alice, expires_on, error):
    client.force_login(alice)
    response = client.post(TOKENS, {"name": "x", "expires": "custom", "expires_on": expires_on})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not ApiToken.objects.exists()


def test_an_unknown_choice_is_a_400(client, alice):
    client.force_login(alice)
    assert client.post(TOKENS, {"name": "x", "expires": "7"}).status_code == 400
    assert not ApiToken.objects.exists()


def test_the_tokens_page_shows_expiry_and_expired_tokens(client, alice):
    create_token(alice, "forever")
    create_token(alice, "ci", expires_at=datetime(2099, 1, 1, tzinfo=UTC))
    old, _ = create_token(alice, "old laptop", expires_at=timezone.now() + timedelta(days=1))
    expire(old)
    client.force_login(alice)
    page = client.get(TOKENS).content.decode()
    assert "2099-01-01 00:00 UTC" in page
    assert f"expired {old.expires_at:%Y-%m-%d}" in page
    assert 'value="never"' in page and 'value="30"' in page and 'value="90"' in page and 'value="custom"' in page


def test_the_command_line_can_give_an_expiry(alice):
    out = StringIO()
    call_command("create_api_token", "alice", "--expires-in-days", "7", stdout=out, stderr=StringIO())
    token = ApiToken.objects.get(user=alice)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    assert client_with(out.getvalue().split()[-1]).get("/api/v1/me/").status_code == 200


def test_expiry_for_each_choice():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert expiry_for("never", now=now) is None
    assert expiry_for("30", now=now) == datetime(2026, 12, 30, 12, 0, tzinfo=UTC)
    assert expiry_for("custom", date(2026, 12, 31), now=now) == datetime(2027, 1, 1, tzinfo=UTC)
