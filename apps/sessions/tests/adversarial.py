"""What the sessions' adversarial modules share: alice and bob for a whole module (a transactional
test would flush them after its first test), under the default safety rules as in production, and
small helpers that fail with the server's answer when a request is refused.

A module imports the fixtures it uses (``from apps.sessions.tests.adversarial import alice, bob,
people``); they are module-scoped and flush the database at the end, as a transactional test would.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from apps.monitoring.models import SafetyRule
from apps.monitoring.rules import ensure_default_rules
from apps.sessions.tests.test_sessions_live import Api


@pytest.fixture(scope="module")
def people(live_sessions_stack, django_db_blocker):
    """alice and bob, each with an API client, for the whole module."""
    assert connection.settings_dict["NAME"].startswith("test_"), "not the test database"
    with django_db_blocker.unblock():
        users = get_user_model().objects
        alice = users.create_user("alice", "alice@example.com", "alice-password-1")
        bob = users.create_user("bob", "bob@example.com", "bob-password-1")
        people = SimpleNamespace(alice=Api(live_sessions_stack.url, alice), bob=Api(live_sessions_stack.url, bob))
        # Sessions run under the default safety rules, as in production (a flush removes seeded rows).
        ensure_default_rules(SafetyRule)
    yield people
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def alice(people):
    return people.alice


@pytest.fixture(scope="module")
def bob(people):
    return people.bob


def start(api: Api, **body) -> dict:
    response = api.create(**body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ready", response.json()
    return response.json()


def end(api: Api, session_id: str) -> None:
    response = api.http.delete(f"{api.base}{session_id}/", timeout=30)
    assert response.status_code == 202, response.text


def run(api: Api, session_id: str, cmd: list[str], **body) -> dict:
    response = api.exec(session_id, cmd, **body)
    assert response.status_code == 200, response.text
    return response.json()


def python(api: Api, session_id: str, code: str, **body) -> dict:
    """What a Python program printed as JSON in the session."""
    result = run(api, session_id, ["python3", "-c", code], **body)
    assert result["returncode"] == 0, result
    return json.loads(result["stdout"])
