"""The kill switch over a real session host and real sandboxes (tests/stack.py): every live session ends
with reason kill_switch, the response names them, and their containers go away."""

from __future__ import annotations

import pytest
import requests
from docker.errors import NotFound

from apps.accounts.models import ApiToken
from apps.monitoring.models import Incident
from apps.sandboxing import engine
from apps.sessions.models import EndReason, Session, Status
from tests.stack import live_sessions_stack, wait_until  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def exists(container_id: str) -> bool:
    """Whether the engine still has the container (running or not)."""
    try:
        engine.client().containers.get(container_id)
    except NotFound:
        return False
    return True


def api_for(user) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Token {ApiToken.issue(user, 'killswitch')[1]}"
    return http


def test_the_kill_switch_ends_every_live_session_and_removes_their_sandboxes(
    live_sessions_stack,  # noqa: F811
    alice,
    bob,
    olivia,
):
    sandboxes = f"{live_sessions_stack.url}/api/v1/sandboxes/"
    alice_api, bob_api, olivia_api = api_for(alice), api_for(bob), api_for(olivia)
    ids = []
    for http in (alice_api, alice_api, bob_api):
        created = http.post(sandboxes, json={}, timeout=60)
        assert created.status_code == 201 and created.json()["status"] == "ready", created.text
        ids.append(created.json()["id"])
    containers = {sid: Session.objects.get(pk=sid).container_id for sid in ids}
    assert all(exists(container_id) for container_id in containers.values())

    response = olivia_api.post(f"{live_sessions_stack.url}/api/v1/killswitch/", json={"engaged": True}, timeout=60)
    assert response.status_code == 200, response.text
    assert sorted(response.json()["sessions_ended"]) == sorted(ids)
    for sid in ids:
        session = Session.objects.get(pk=sid)
        assert (session.status, session.end_reason) == (Status.ENDED, EndReason.KILL_SWITCH)
        assert alice_api.get(f"{sandboxes}{ids[0]}/", timeout=30).json()["end_reason"] == "kill_switch"

    wait_until(
        lambda: not any(exists(container_id) for container_id in containers.values()),
        timeout=60,
        what="the sessions' containers to be removed",
    )
    # Each ended session has its incident, with what its sandbox held when it was frozen.
    for sid in ids:
        incident = wait_until(
            lambda sid=sid: (i := Incident.objects.filter(session_id=sid).first()) and "frozen" in i.evidence and i,
            timeout=60,
            what="the session's incident and its evidence",
        )
        assert incident.summary == "kill switch by olivia"
    refused = alice_api.post(sandboxes, json={}, timeout=60)
    assert refused.status_code == 503 and "kill switch" in refused.json()["detail"]
