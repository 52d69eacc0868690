"""Adversarial case 35: sign-up never tells whether an email address is registered, and look-alike
usernames are refused. Mallory probes; alice and olivia (the operator) are registered."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from apps.accounts.usernames import check_one_script, skeleton

pytestmark = pytest.mark.django_db

SIGNUP = "/accounts/signup/"
PASSWORD = "a-long-Passphrase-42"
User = get_user_model()


def sign_up(client, username, email, password=PASSWORD):
    return client.post(SIGNUP, {"username": username, "email": email, "password1": password, "password2": password})


def page_text(response, *names):
    """The page as a person reads it, with what differs by design (the names typed, the CSRF token) blanked."""
    html = response.content.decode()
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)
    html = re.sub(r'<meta name="csrf-token" content="[^"]+"', "", html)
    for name in names:
        html = html.replace(name, "…")
    return html


@pytest.fixture(params=["optional", "mandatory"])
def verification(request, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = request.param
    return request.param


def test_a_registered_email_gets_the_same_answer_as_a_new_one(alice, verification):
    taken_client, fresh_client = Client(), Client()
    taken = sign_up(taken_client, "mallory1", "ALICE@example.com")
    fresh = sign_up(fresh_client, "mallory2", "frank@example.com")
    assert taken.status_code == fresh.status_code == 302
    assert taken["Location"] == fresh["Location"] == "/accounts/confirm-email/"
    taken_page = taken_client.get(taken["Location"])
    fresh_page = fresh_client.get(fresh["Location"])
    assert taken_page.status_code == fresh_page.status_code == 200
    assert "Confirmation email sent to" in fresh_page.content.decode()
    assert page_text(taken_page, "alice@example.com") == page_text(fresh_page, "frank@example.com")
    assert "_auth_user_id" not in taken_client.session
    assert "_auth_user_id" not in fresh_client.session


def test_the_owner_of_a_registered_email_is_told_by_email_and_no_second_account_is_made(alice, verification):
    sign_up(Client(), "mallory", "alice@example.com")
    assert not User.objects.filter(username="mallory").exists()
    assert User.objects.filter(email__iexact="alice@example.com").count() == 1
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]
    assert "already" in mail.outbox[0].body.lower()


def test_a_new_account_is_confirmed_by_email_then_signed_in(client, verification):
    response = sign_up(client, "erin", "erin@example.com")
    assert response["Location"] == "/accounts/confirm-email/"
    erin = User.objects.get(username="erin")
    assert erin.groups.filter(name="Researchers").exists()
    assert "_auth_user_id" not in client.session
    assert [message.to for message in mail.outbox] == [["erin@example.com"]]
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^/\s]+/)", mail.outbox[0].body)[1]
    assert client.get(link).status_code == 200
    assert client.post(link).status_code == 302
    assert int(client.session["_auth_user_id"]) == erin.pk


def test_without_mail_a_taken_address_is_refused_as_before(alice, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    response = sign_up(Client(), "mallory", "alice@example.com")
    assert response.status_code == 200
    assert "already" in response.content.decode()
    assert not User.objects.filter(username="mallory").exists()


@pytest.mark.parametrize(
    "username",
    [
        "оperator",  # a Cyrillic о
        "opеrator",  # a Cyrillic е
        "οperator",  # a Greek ο
    ],
)
def test_a_mixed_script_username_is_refused(client, olivia, username):
    response = sign_up(client, username, "m@example.com")
    assert response.status_code == 200
    assert "Use letters of one script only" in response.content.decode()
    assert not User.objects.filter(username=username).exists()


@pytest.mark.parametrize("username", ["ｏｌｉｖｉａ", "OLIVIA", "Olivia", "ｏlivia"])
def test_a_username_that_reads_as_an_existing_one_is_refused(client, olivia, username):
    response = sign_up(client, username, "m@example.com")
    assert response.status_code == 200
    html = response.content.decode()
    assert "looks the same already exists" in html or "already exists" in html
    assert User.objects.filter(username__iexact=username).count() <= 1
    assert not User.objects.exclude(pk=olivia.pk).exists()


@pytest.mark.parametrize("username", ["山田taro", "김민수", "ユーザー", "αβγ", "иван", "José", "ali_ce.1"])
def test_names_in_one_script_or_an_allowed_mix_are_accepted(client, settings, username):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    response = sign_up(client, username, f"u{abs(hash(username))}@example.com")
    assert response.status_code == 302, response.content.decode()[:3000]
    assert User.objects.filter(username=username).exists()


@pytest.mark.parametrize("username", ["сорe", "соре", "оlivia", "ΟLIVIA"])
def test_a_name_in_another_script_that_reads_as_an_existing_one_is_refused(client, olivia, username, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    User.objects.create_user("cope", "cope@example.com", "pw-cope-123456")
    response = sign_up(client, username, "m@example.com")
    assert response.status_code == 200
    assert not User.objects.filter(username=username).exists()


def test_the_skeleton_reads_whole_script_look_alikes_as_latin():
    assert skeleton("соре") == skeleton("cope") == "cope"  # all Cyrillic
    assert skeleton("иван") != skeleton("ivan")  # a Cyrillic name that does not look Latin stays itself


def test_the_skeleton_folds_width_case_and_ligatures():
    assert skeleton("ＯＰＥＲＡＴＯＲ") == skeleton("Operator") == "operator"
    assert skeleton("ﬁona") == "fiona"
    with pytest.raises(Exception, match="Cyrillic and Latin"):
        check_one_script("pаypal")


def test_password_reset_answers_the_same_for_a_registered_and_an_unknown_address(alice):
    registered = Client().post("/accounts/password/reset/", {"email": "alice@example.com"})
    unknown = Client().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert registered.status_code == unknown.status_code == 302
    assert registered["Location"] == unknown["Location"]
