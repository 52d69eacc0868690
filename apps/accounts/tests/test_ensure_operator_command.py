"""`manage.py ensure_operator` (run by `make run`): the operator account exists, its password stays off stdout."""

import json
import stat
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def ensure_operator():
    out = StringIO()
    call_command("ensure_operator", stdout=out)
    return out.getvalue()


def test_the_operator_is_created_and_the_password_is_not_printed(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    output = ensure_operator()
    credentials_file = tmp_path / "operator.json"
    password = json.loads(credentials_file.read_text())["password"]
    assert password not in output
    assert "password=" not in output
    assert str(credentials_file) in output
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    operator = get_user_model().objects.get(username="operator")
    assert operator.is_staff and operator.is_superuser
    assert operator.check_password(password)


def test_a_second_run_keeps_the_password_and_says_where_it_is(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    ensure_operator()
    first = (tmp_path / "operator.json").read_text()
    output = ensure_operator()
    assert (tmp_path / "operator.json").read_text() == first
    assert json.loads(first)["password"] not in output


def test_a_credentials_file_readable_by_others_is_tightened(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    credentials_file = tmp_path / "operator.json"
    credentials_file.write_text(json.dumps({"username": "operator", "password": "an-old-Passphrase-7"}))
    credentials_file.chmod(0o644)
    output = ensure_operator()
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert "an-old-Passphrase-7" not in output
    assert get_user_model().objects.get(username="operator").check_password("an-old-Passphrase-7")
