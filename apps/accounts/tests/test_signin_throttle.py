"""Adversarial case 31: password guessing on every sign-in path is throttled, and the owner still gets in.

Mallory guesses from one address (10.6.6.6) or from many; alice and olivia are the owners. Counters
live in the real Redis; every request goes through the real views.
"""

import re

import pytest
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.services import create_token

pytestmark = pytest.mark.django_db

MALLORY = "10.6.6.6"


def pages_from(address):
    return Client(REMOTE_ADDR=address)


def sign_in(client, login, password):
    return client.post("/accounts/login/", {"login": login, "password": password})


def admin_sign_in(client, username, password):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def api_from(address, key):
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def sign_out(client):
    """Sign out as a person does (a POST), which keeps the browser's other cookies, unlike Client.logout()."""
    assert client.post("/accounts/logout/").status_code == 302
    assert not is_signed_in(client)


def is_signed_in(client):
    return "_auth_user_id" in client.session


@pytest.fixture(autouse=True)
def no_email_verification(settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"


def test_guessing_olivias_password_on_the_admin_gets_429_with_retry_after(olivia):
    mallory = pages_from(MALLORY)
    answers = [admin_sign_in(mallory, "olivia", f"guess-{n}").status_code for n in range(15)]
    assert answers[:5] == [200] * 5
    assert set(answers[5:]) == {429}
    response = admin_sign_in(mallory, "olivia", "olivia-password-1")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-in attempts for this account" in response.content.decode()
    assert not is_signed_in(mallory)


def test_olivia_still_gets_into_the_admin_from_her_own_address(olivia):
    mallory = pages_from(MALLORY)
    for n in range(6):
        admin_sign_in(mallory, "olivia", f"guess-{n}")
    olivia_browser = pages_from("10.0.0.7")
    response = admin_sign_in(olivia_browser, "olivia", "olivia-password-1")
    assert response.status_code == 302
    assert is_signed_in(olivia_browser)


def test_the_per_address_limit_is_strict_across_accounts_and_paths(alice, bob, olivia):
    mallory = pages_from(MALLORY)
    for n in range(5):
        sign_in(mallory, f"user{n}", "guess")
    for n in range(5):
        admin_sign_in(mallory, f"staff{n}", "guess")
    # Ten failures from one address: every path refuses it, even with a right password.
    response = sign_in(mallory, "alice", "alice-password-1")
    assert response.status_code == 429
    assert "from your network address" in response.content.decode()
    assert admin_sign_in(mallory, "olivia", "olivia-password-1").status_code == 429
    _token, key = create_token(bob, "laptop")
    api = api_from(MALLORY, key)
    answer = api.get("/api/v1/me/")
    assert answer.status_code == 429
    assert int(answer["Retry-After"]) > 0
    assert "from your network address" in answer.json()["error"]
    assert not is_signed_in(mallory)
    # Everyone else is untouched.
    assert sign_in(pages_from("10.0.0.8"), "alice", "alice-password-1").status_code == 302
    assert api_from("10.0.0.9", key).get("/api/v1/me/").status_code == 200


def test_guessing_api_tokens_gets_429_with_retry_after(alice):
    answers = [api_from(MALLORY, f"cru_guess-{n}").get("/api/v1/me/").status_code for n in range(12)]
    assert answers[:10] == [401] * 10
    assert answers[10:] == [429, 429]
    _token, key = create_token(alice, "laptop")
    assert api_from("10.0.0.7", key).get("/api/v1/me/").status_code == 200


def test_a_signed_in_guesser_cannot_reset_the_count_by_signing_in_between_guesses(alice, bob):
    mallory = pages_from(MALLORY)
    for round_ in range(2):
        for n in range(5):
            sign_in(mallory, f"victim{round_}{n}", "guess")
        assert sign_in(mallory, "bob", "bob-password-1").status_code in (302, 429)
        mallory.logout()
    assert sign_in(mallory, "alice", "alice-password-1").status_code == 429


def test_logins_that_name_no_account_are_counted_like_real_ones(alice):
    mallory = pages_from(MALLORY)
    for login in ("alice", "nobody-here"):
        answers = [sign_in(mallory, login, f"guess-{n}").status_code for n in range(6)]
        assert answers == [200] * 5 + [429], login
        mallory = pages_from("10.6.6.7")


def test_the_email_and_the_username_count_against_the_same_account(alice):
    mallory = pages_from(MALLORY)
    for n in range(3):
        sign_in(mallory, "alice", f"guess-{n}")
    for n in range(2):
        sign_in(mallory, "ALICE@example.com", f"guess-{n}")
    assert sign_in(mallory, "alice@example.com", "alice-password-1").status_code == 429


def test_a_distributed_guess_pauses_the_account_but_not_for_alices_usual_address(alice, settings):
    settings.SIGNIN_ACCOUNT_LIMIT = (8, 3600)
    home = pages_from("10.0.0.7")
    assert sign_in(home, "alice", "alice-password-1").status_code == 302
    for n in range(8):
        sign_in(pages_from(f"10.6.6.{n + 10}"), "alice", "guess")
    # A fresh address (a new guesser, or alice travelling) is refused for now, with the way out named.
    response = sign_in(pages_from("10.6.7.1"), "alice", "alice-password-1")
    assert response.status_code == 429
    assert "reset your password" in response.content.decode()
    assert "/accounts/password/reset/" in response.content.decode()
    # Alice at home still gets in.
    home = pages_from("10.0.0.7")
    assert sign_in(home, "alice", "alice-password-1").status_code == 302
    assert is_signed_in(home)


def test_a_password_reset_lifts_every_lock_on_the_account(alice, settings):
    settings.SIGNIN_ACCOUNT_LIMIT = (8, 3600)
    for n in range(8):
        sign_in(pages_from(f"10.6.6.{n + 10}"), "alice", "guess")
    travelling = pages_from("10.0.0.50")
    assert sign_in(travelling, "alice", "alice-password-1").status_code == 429

    travelling.post("/accounts/password/reset/", {"email": "alice@example.com"})
    link = re.search(r"https?://[^/\s]+(/accounts/password/reset/key/\S+/)", mail.outbox[-1].body)[1]
    set_password_page = travelling.get(link, follow=True)
    assert set_password_page.status_code == 200
    done = travelling.post(
        set_password_page.redirect_chain[-1][0] if set_password_page.redirect_chain else link,
        {"password1": "a-new-Passphrase-42", "password2": "a-new-Passphrase-42"},
    )
    assert done.status_code == 302

    assert sign_in(travelling, "alice", "a-new-Passphrase-42").status_code == 302
    assert is_signed_in(travelling)


def test_an_expired_token_is_not_counted_as_a_guess(alice):
    from datetime import timedelta

    from django.utils import timezone

    token, key = create_token(alice, "old laptop")
    token.expires_at = timezone.now() - timedelta(days=1)
    token.save(update_fields=["expires_at"])
    answers = {api_from(MALLORY, key).get("/api/v1/me/").status_code for _ in range(12)}
    assert answers == {401}


def test_behind_a_proxy_each_client_is_counted_by_its_forwarded_address(alice, settings):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    proxy = "127.0.0.1"
    # Mallory forges an X-Forwarded-For; the proxy appends her real address, and that one counts.
    mallory = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"10.0.0.7, {MALLORY}")
    for n in range(10):
        sign_in(mallory, f"user{n}", "guess")
    assert sign_in(mallory, "alice", "alice-password-1").status_code == 429
    # Alice comes through the same proxy from her own address, and gets in.
    alice_browser = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="10.0.0.7")
    assert sign_in(alice_browser, "alice", "alice-password-1").status_code == 302


def test_the_failure_that_reaches_a_limit_is_audited_once(alice):
    from apps.audit.models import AuditEvent

    mallory = pages_from(MALLORY)
    for n in range(7):
        sign_in(mallory, "alice", f"guess-{n}")
    paused = AuditEvent.objects.filter(action="auth.signin_paused")
    assert paused.count() == 1
    event = paused.get()
    assert event.target == f"user:{alice.pk}"
    assert event.details["limit"] == "account_at_address"
    assert event.details["address"] == MALLORY


def test_the_api_keeps_answering_when_the_throttles_redis_is_unreachable(alice, settings):
    _token, key = create_token(alice, "laptop")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert api_from("10.0.0.7", key).get("/api/v1/me/").status_code == 200
    assert api_from(MALLORY, "cru_guess").get("/api/v1/me/").status_code == 401


def test_olivias_own_browser_gets_in_while_a_guesser_on_the_same_machine_is_locked_out(olivia):
    """On one host everyone is 127.0.0.1: the per-address locks alone would keep olivia out too."""
    olivias_browser = pages_from("127.0.0.1")
    assert admin_sign_in(olivias_browser, "olivia", "olivia-password-1").status_code == 302
    sign_out(olivias_browser)
    mallory = pages_from("127.0.0.1")
    for n in range(15):
        admin_sign_in(mallory, "olivia", f"guess-{n}")
    assert admin_sign_in(mallory, "olivia", "olivia-password-1").status_code == 429
    assert sign_in(mallory, "olivia", "olivia-password-1").status_code == 429
    # Her browser carries the device cookie of her last sign-in: neither lock applies to it.
    assert admin_sign_in(olivias_browser, "olivia", "olivia-password-1").status_code == 302
    assert is_signed_in(olivias_browser)


def test_a_device_cookie_is_worth_nothing_for_another_account_or_when_forged(alice, olivia):
    alices_browser = pages_from("127.0.0.1")
    assert sign_in(alices_browser, "alice", "alice-password-1").status_code == 302
    sign_out(alices_browser)
    mallory = pages_from("127.0.0.1")
    for n in range(6):
        admin_sign_in(mallory, "olivia", f"guess-{n}")
    assert "crucible_signin_device" in alices_browser.cookies
    # Alice's cookie does not open olivia's account to whoever holds it...
    assert admin_sign_in(alices_browser, "olivia", "olivia-password-1").status_code == 429
    # ...and a cookie that was not signed by Crucible is ignored.
    mallory.cookies["crucible_signin_device"] = "eyJ1IjoyLCJuIjoieCJ9:forged:signature"
    assert admin_sign_in(mallory, "olivia", "olivia-password-1").status_code == 429


def test_a_stolen_device_cookie_cannot_be_used_to_guess(alice):
    browser = pages_from("10.0.0.7")
    assert sign_in(browser, "alice", "alice-password-1").status_code == 302
    sign_out(browser)
    answers = [sign_in(browser, "alice", f"guess-{n}").status_code for n in range(6)]
    assert answers == [200] * 5 + [429]
    response = sign_in(browser, "alice", "alice-password-1")
    assert response.status_code == 429
    assert "from this browser" in response.content.decode()


def test_the_device_cookie_is_http_only(alice):
    browser = pages_from("10.0.0.7")
    sign_in(browser, "alice", "alice-password-1")
    cookie = browser.cookies["crucible_signin_device"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) == 30 * 86400


@pytest.mark.parametrize("path, field", [("/accounts/login/", "login"), ("/admin/login/", "username")])
def test_a_nul_in_the_login_is_a_refused_sign_in_not_a_server_error(alice, path, field):
    mallory = pages_from(MALLORY)
    response = mallory.post(path, {field: "ali\x00ce", "password": "guess"})
    assert response.status_code == 200
    assert not is_signed_in(mallory)
