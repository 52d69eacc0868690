"""`manage.py create_api_token USERNAME`: creates the user when missing, prints a working key last."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, hash_key

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip().splitlines()[-1]


def test_creates_the_user_when_missing_and_prints_the_key_last():
    key = run("carol")
    carol = get_user_model().objects.get(username="carol")
    assert not carol.has_usable_password()
    token = ApiToken.objects.get(user=carol)
    assert token.key_hash == hash_key(key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/me/").json()["username"] == "carol"


def test_an_existing_user_gets_another_token(alice):
    first = run("alice")
    second = run("alice", "--name", "ci")
    assert first != second
    assert ApiToken.objects.filter(user=alice).count() == 2
    assert ApiToken.objects.filter(user=alice, name="ci").exists()
    alice.refresh_from_db()
    assert alice.check_password("alice-password-1")


def test_staff_flag_makes_an_operator():
    from apps.accounts.roles import is_operator

    run("oscar", "--staff")
    assert is_operator(get_user_model().objects.get(username="oscar"))


def test_a_new_user_is_a_researcher():
    run("dave")
    dave = get_user_model().objects.get(username="dave")
    assert dave.groups.filter(name="Researchers").exists()
