"""Sign-up, sign-in, sign-out through allauth's pages; failed sign-ins are audited and throttled."""

import os
import re
import subprocess
import sys
from urllib.parse import urlparse, urlunparse

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from apps.audit.models import AuditEvent
from crucible.social import social_providers

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def sign_in(client, login, password):
    return client.post(LOGIN, {"login": login, "password": password})


def test_the_sign_in_page_is_in_the_house_layout(client):
    html = client.get(LOGIN).content.decode()
    assert "Crucible" in html
    assert "css/crucible.css" in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "Sign up" in html


def test_sign_up_creates_a_researcher_who_is_signed_in_on_confirming(client, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    response = client.post(
        "/accounts/signup/",
        {
            "username": "erin",
            "email": "erin@example.com",
            "password1": "a-long-Passphrase-42",
            "password2": "a-long-Passphrase-42",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    # Sign-up answers the same for a registered address (case 35): confirm first, then signed in.
    assert response["Location"] == "/accounts/confirm-email/"
    erin = get_user_model().objects.get(username="erin")
    assert erin.groups.filter(name="Researchers").exists()
    assert AuditEvent.objects.filter(action="account.signup", actor=erin).exists()
    assert len(mail.outbox) == 1  # the verification email
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^/\s]+/)", mail.outbox[0].body)[1]
    client.post(link)
    assert int(client.session["_auth_user_id"]) == erin.pk


def test_sign_up_can_be_closed(client, settings):
    settings.ACCOUNT_ALLOW_SIGNUP = False
    response = client.get("/accounts/signup/")
    assert "closed" in response.content.decode().lower()
    client.post(
        "/accounts/signup/",
        {"username": "mallory", "email": "m@example.com", "password1": "x-Long-pass-42", "password2": "x-Long-pass-42"},
    )
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_mandatory_email_verification_blocks_sign_in_until_verified(client, settings, alice):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    response = sign_in(client, "alice", "alice-password-1")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert "_auth_user_id" not in client.session


def test_sign_in_with_username_or_email(client, alice, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    assert sign_in(client, "alice", "alice-password-1").status_code == 302
    assert int(client.session["_auth_user_id"]) == alice.pk
    client.logout()
    assert sign_in(client, "alice@example.com", "alice-password-1").status_code == 302
    assert AuditEvent.objects.filter(action="auth.login", actor=alice).count() == 2


def test_sign_out_is_a_post_and_audited(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.logout", actor=alice).exists()


def test_a_failed_sign_in_is_refused_and_audited_without_the_password(client, alice):
    response = sign_in(client, "alice", "wrong-password")
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.actor is None
    assert event.target == "login:alice"
    assert event.source_ip == "127.0.0.1"
    assert "wrong-password" not in str(event.details)


def test_sign_in_is_refused_after_repeated_failures_even_with_the_right_password(client, alice, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    # Default: 5 failures for one account from one address within 15 minutes.
    for _ in range(5):
        assert sign_in(client, "alice", "wrong-password").status_code == 200
    response = sign_in(client, "alice", "alice-password-1")
    assert response.status_code == 429
    assert "Too many failed sign-in attempts for this account" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # Another account from another address is not affected.
    other = client.__class__(REMOTE_ADDR="10.0.0.2")
    bob = get_user_model().objects.create_user("bob2", "bob2@example.com", "bob-password-1")
    assert sign_in(other, "bob2", "bob-password-1").status_code == 302
    assert int(other.session["_auth_user_id"]) == bob.pk


def test_too_many_sign_in_attempts_from_one_address_get_429(client, alice, settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login": "3/m/ip"}
    for _ in range(3):
        assert sign_in(client, "nobody", "whatever").status_code == 200
    assert sign_in(client, "alice", "alice-password-1").status_code == 429
    assert "_auth_user_id" not in client.session


def test_password_reset_sends_mail(client, alice):
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject.startswith("[Crucible]")


def test_providers_are_installed_only_when_configured():
    assert social_providers({}) == ([], {})
    apps, providers = social_providers({"GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "secret"})
    assert apps == ["allauth.socialaccount.providers.github"]
    assert providers["github"]["APPS"][0]["client_id"] == "id"


def test_a_half_configured_provider_fails_loudly():
    with pytest.raises(ImproperlyConfigured, match="GITHUB_CLIENT_SECRET"):
        social_providers({"GITHUB_CLIENT_ID": "id"})
    with pytest.raises(ImproperlyConfigured, match="OIDC_SERVER_URL"):
        social_providers({"OIDC_CLIENT_ID": "id", "OIDC_CLIENT_SECRET": "s"})


def test_the_sign_in_page_lists_no_provider_when_none_is_configured(client):
    html = client.get(LOGIN).content.decode()
    assert "Continue with" not in html
    assert "/accounts/github/login/" not in html


def test_the_sign_in_page_lists_only_configured_providers(settings):
    """Run a fresh process with GitHub configured by environment alone, against this test database:
    the provider apps are chosen when settings load, so only a new process shows a new provider."""
    url = urlparse(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"])
    env = dict(os.environ, GITHUB_CLIENT_ID="gh-client", GITHUB_CLIENT_SECRET="gh-secret")
    env.update(DATABASE_URL=urlunparse(url), DJANGO_SETTINGS_MODULE="crucible.settings", CRUCIBLE_ENV="test")
    script = (
        "import django; django.setup(); from django.test import Client; "
        "print(Client(HTTP_HOST='localhost').get('/accounts/login/').content.decode())"
    )
    html = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert "Continue with GitHub" in html
    assert "/accounts/github/login/" in html
    assert "Google" not in html


def test_the_throttled_page_is_the_house_page(client, settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login": "1/m/ip"}
    sign_in(client, "nobody", "whatever")
    response = sign_in(client, "nobody", "whatever")
    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert "Too many attempts" in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/accounts/login/",
        "/accounts/signup/",
        "/accounts/password/reset/",
        "/accounts/password/reset/done/",
        "/accounts/confirm-email/",
    ],
)
def test_every_entrance_page_renders_in_the_house_layout(client, url):
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="site-header"' in html
    assert " style=" not in html


@pytest.mark.parametrize(
    "url", ["/accounts/email/", "/accounts/password/change/", "/accounts/3rdparty/", "/accounts/logout/"]
)
def test_every_account_page_renders_in_the_house_layout(client, alice, url):
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200
    assert 'class="site-header"' in response.content.decode()
