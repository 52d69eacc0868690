"""WS /ws/alerts/: operators only; the unacknowledged count on connect, then every alert live.

The operators' group is one for the whole channel layer, so other tests (and other test
processes on the same Redis) may publish alerts to it too: tests pick their own alerts out by
evaluation id.
"""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections
from django.test import Client

from apps.accounts.models import ApiToken
from apps.accounts.roles import OPERATORS_GROUP
from apps.console import consumers
from apps.evaluations import publisher
from apps.evaluations.tests.factories import make_evaluation
from apps.monitoring.alerts import raise_alert
from crucible.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

# What a browser on http://127.0.0.1:8000 sends: its Host, and the page's Origin.
HOST = (b"host", b"127.0.0.1:8000")
ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOSTILE = "<script>alert(document.cookie)</script><img src=x onerror=\"fetch('//evil')\">"


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database thread keeps its connection; close it so the test database can go."""
    yield
    await database_sync_to_async(connections.close_all)()


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def connect(*, user=None, token=None, origin=ORIGIN):
    headers = [HOST] + ([origin] if origin else [])
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/alerts/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def close_code(communicator) -> int:
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    await communicator.disconnect()
    return message.get("code")


@database_sync_to_async
def raise_and_publish(owner, *, rule_name="fork-bomb", severity="critical", evidence="pids 64/64"):
    """What the worker does when a rule fires: record the alert, then publish it."""
    evaluation = make_evaluation(owner)
    alert = raise_alert(
        evaluation_id=evaluation.pk,
        rule_name=rule_name,
        severity=severity,
        message="pids near limit",
        evidence=evidence,
    )
    publisher.publish_alert(evaluation.pk, alert.as_message())
    return evaluation, alert


async def receive_alert_for(communicator, evaluation_id) -> dict:
    """The next alert about this evaluation (alerts other tests publish are skipped)."""
    while True:
        message = await communicator.receive_json_from(timeout=5)
        if message["type"] == "alert" and message.get("evaluation_id") == str(evaluation_id):
            return message


# --- who may connect ------------------------------------------------------------------------


async def test_an_anonymous_client_is_closed_with_4401():
    communicator = await connect()
    assert await close_code(communicator) == 4401


async def test_a_revoked_token_is_closed_with_4401(olivia):
    token, key = await database_sync_to_async(ApiToken.issue)(olivia, "cli")
    await database_sync_to_async(token.revoke)()
    communicator = await connect(token=key, origin=None)
    assert await close_code(communicator) == 4401


async def test_a_researcher_is_closed_with_4403_and_told_nothing(alice):
    await raise_and_publish(alice)
    communicator = await connect(user=alice)
    assert await close_code(communicator) == 4403
    assert await communicator.receive_nothing(timeout=0.1)
    _, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator = await connect(token=key, origin=None)
    assert await close_code(communicator) == 4403


async def test_a_browser_from_another_origin_is_refused(olivia):
    communicator = WebsocketCommunicator(
        application,
        "/ws/alerts/",
        headers=[
            (b"origin", b"https://evil.example"),
            (b"cookie", await database_sync_to_async(session_cookie)(olivia)),
        ],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    await communicator.disconnect()


# --- what operators receive -----------------------------------------------------------------


async def test_an_operator_gets_the_count_then_each_alert_live_with_the_new_count(alice, olivia):
    await raise_and_publish(alice, rule_name="memory")  # one already waiting
    communicator = await connect(user=olivia)
    assert await communicator.receive_json_from(timeout=5) == {"type": "alerts", "unacknowledged": 1}

    evaluation, alert = await raise_and_publish(alice, rule_name="fork-bomb", severity="critical")
    message = await receive_alert_for(communicator, evaluation.pk)
    assert message["rule"] == "fork-bomb"
    assert message["severity"] == "critical"
    assert message["evidence"] == "pids 64/64"
    assert message["message"] == "pids near limit"
    assert message["id"] == alert.pk
    assert message["created_at"] == alert.created_at.isoformat()
    assert message["unacknowledged"] == 2
    await communicator.disconnect()


async def test_an_operator_by_token_and_an_operators_group_member_are_served(alice, bob):
    def make_operator():
        bob.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
        return ApiToken.issue(bob, "cli")[1]

    key = await database_sync_to_async(make_operator)()
    by_token = await connect(token=key, origin=None)
    by_session = await connect(user=bob)
    for communicator in (by_token, by_session):
        assert await communicator.receive_json_from(timeout=5) == {"type": "alerts", "unacknowledged": 0}
    evaluation, _ = await raise_and_publish(alice)
    for communicator in (by_token, by_session):
        assert (await receive_alert_for(communicator, evaluation.pk))["unacknowledged"] == 1
        await communicator.disconnect()


async def test_hostile_evidence_arrives_as_plain_json_text(alice, olivia):
    communicator = await connect(user=olivia)
    await communicator.receive_json_from(timeout=5)
    evaluation, _ = await raise_and_publish(alice, rule_name="pattern", evidence=HOSTILE)
    # The raw frame is JSON whose string value is exactly the evidence: nothing rendered, nothing stripped.
    while True:
        frame = await communicator.receive_from(timeout=5)
        message = json.loads(frame)
        if message.get("evaluation_id") == str(evaluation.pk):
            break
    assert message["type"] == "alert"
    assert message["evidence"] == HOSTILE
    await communicator.disconnect()


async def test_the_evaluation_stream_still_gets_the_alert(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    headers = [HOST, ORIGIN, (b"cookie", await database_sync_to_async(session_cookie)(alice))]
    communicator = WebsocketCommunicator(application, f"/ws/evaluations/{evaluation.pk}/", headers=headers)
    await communicator.connect(timeout=5)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"

    @database_sync_to_async
    def publish():
        alert = raise_alert(evaluation_id=evaluation.pk, rule_name="flood", severity="warning", message="m")
        publisher.publish_alert(evaluation.pk, alert.as_message())

    await publish()
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "alert" and message["rule"] == "flood"
    await communicator.disconnect()


async def test_an_operator_who_loses_the_role_is_closed_with_4403(alice, olivia, monkeypatch):
    monkeypatch.setattr(consumers.OperatorAlertsConsumer, "recheck_s", 0.0)
    communicator = await connect(user=olivia)
    await communicator.receive_json_from(timeout=5)

    def demote():
        olivia.is_staff = False
        olivia.save(update_fields=["is_staff"])
        olivia.groups.clear()

    await database_sync_to_async(demote)()
    await raise_and_publish(alice, evidence="secret evidence")
    assert await close_code(communicator) == 4403


async def test_a_signed_out_session_is_closed_on_the_next_alert(alice, olivia, monkeypatch):
    monkeypatch.setattr(consumers.OperatorAlertsConsumer, "recheck_s", 0.0)
    communicator = await connect(user=olivia)
    await communicator.receive_json_from(timeout=5)

    @database_sync_to_async
    def sign_out_everywhere():
        from django.contrib.sessions.models import Session

        Session.objects.all().delete()

    await sign_out_everywhere()
    await raise_and_publish(alice)
    assert await close_code(communicator) == 4401


async def test_an_alert_without_an_evaluation_row_still_reaches_operators(olivia):
    """Publishing carries the evaluation id the caller names, even for an id with no row (deleted)."""
    communicator = await connect(user=olivia)
    await communicator.receive_json_from(timeout=5)
    evaluation_id = uuid.uuid4()

    @database_sync_to_async
    def publish():
        alert = raise_alert(evaluation_id=evaluation_id, rule_name="r", severity="info", message="m")
        publisher.publish_alert(evaluation_id, alert.as_message())

    await publish()
    message = await receive_alert_for(communicator, evaluation_id)
    assert message["unacknowledged"] == 1
    await communicator.disconnect()
