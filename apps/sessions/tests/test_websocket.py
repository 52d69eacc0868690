"""WS /ws/sandboxes/{id}/?after=N: who may connect, replay, live steps, the replay/live seam, the end.

These run the real consumer over the real channel layer (Redis) and PostgreSQL, with session and step
rows written as a session host writes them; test_pages_live.py watches a real host's steps."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from apps.accounts.models import ApiToken
from apps.sessions import consumers, publisher, services
from apps.sessions.models import EndReason, Session, Status, Step, StepStatus
from apps.sessions.tests.factories import add_step, finish_step, make_session
from crucible.asgi import application
from crucible.ws_db import pooled_db

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1:8000")
ORIGIN = (b"origin", b"http://127.0.0.1:8000")
db = database_sync_to_async


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database threads keep their connections; close them so the test database can go."""
    yield
    await db(connections.close_all)()


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def connect(session_id, *, user=None, token=None, after=None):
    headers = [HOST, ORIGIN]
    if user is not None:
        headers.append((b"cookie", await db(session_cookie)(user)))
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    path = f"/ws/sandboxes/{session_id}/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def close_code(communicator) -> int:
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    await communicator.disconnect()
    return message.get("code")


async def receive_steps(communicator, count) -> list[tuple[int, str]]:
    """The next ``count`` step messages as (seq, status)."""
    seen = []
    while len(seen) < count:
        message = await communicator.receive_json_from(timeout=5)
        if message["type"] == "step":
            seen.append((message["step"]["seq"], message["step"]["status"]))
    return seen


def publish(step: Step) -> None:
    publisher.publish_step(Step.objects.get(pk=step.pk))


def publish_as_running(step: Step) -> None:
    """A stale "running" event of ``step`` (one that was delayed past its "done")."""
    stale = Step.objects.get(pk=step.pk)
    stale.status = StepStatus.RUNNING
    publisher.publish_step(stale)


# --- who may connect ------------------------------------------------------------------------


async def test_an_anonymous_client_is_closed_with_4401(alice):
    session = await db(make_session)(alice)
    assert await close_code(await connect(session.pk)) == 4401


async def test_bobs_view_of_alices_session_is_closed_with_4404_like_a_missing_one(alice, bob):
    session = await db(make_session)(alice)
    await db(add_step)(session, 1)
    for session_id in (session.pk, uuid.uuid4(), "not-a-uuid"):
        communicator = await connect(session_id, user=bob)
        assert await close_code(communicator) == 4404
        assert await communicator.receive_nothing(timeout=0.1)  # nothing about it was sent first


async def test_alice_watches_with_her_token_and_olivia_the_operator_may_watch_too(alice, olivia):
    session = await db(make_session)(alice)
    _, key = await db(ApiToken.issue)(alice, "sdk")
    for communicator in (await connect(session.pk, token=key), await connect(session.pk, user=olivia)):
        assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "ready"}
        await communicator.disconnect()


async def test_a_malformed_after_is_closed_with_4400(alice):
    session = await db(make_session)(alice)
    for after in ("-1", "x", "²", "1" * 13):
        assert await close_code(await connect(session.pk, user=alice, after=after)) == 4400


# --- replay, live, end ----------------------------------------------------------------------


async def test_replay_sends_the_stored_steps_after_the_given_seq_in_order(alice):
    session = await db(make_session)(alice)
    for seq in range(1, 6):
        await db(add_step)(session, seq)
    communicator = await connect(session.pk, user=alice, after=2)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "ready"}
    first = await communicator.receive_json_from(timeout=5)
    assert first == publisher.step_message(await db(Step.objects.get)(session=session, seq=3))
    assert first["step"]["stdout"] == "step 3\n" and first["step"]["cmd"] == ["echo", "step 3"]
    assert await receive_steps(communicator, 2) == [(4, "done"), (5, "done")]
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_a_step_arrives_live_when_it_starts_and_again_when_it_is_done(alice):
    session = await db(make_session)(alice)
    communicator = await connect(session.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    step = await db(add_step)(session, 1, status=StepStatus.RUNNING)
    await db(publish)(step)
    assert await receive_steps(communicator, 1) == [(1, "running")]
    await db(finish_step)(step)
    await db(publish)(step)
    assert await receive_steps(communicator, 1) == [(1, "done")]
    # A late copy of either version is not news any more.
    await db(publish)(step)
    await db(publish_as_running)(step)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_step_running_at_the_replay_is_sent_again_when_done_and_a_finished_one_never_twice(alice):
    session = await db(make_session)(alice)
    await db(add_step)(session, 1)
    running = await db(add_step)(session, 2, status=StepStatus.RUNNING)
    communicator = await connect(session.pk, user=alice)
    assert await receive_steps(communicator, 2) == [(1, "done"), (2, "running")]
    await db(publish)(await db(Step.objects.get)(session=session, seq=1))  # a duplicate publish of a done step
    await db(finish_step)(running)
    await db(publish)(running)
    assert await receive_steps(communicator, 1) == [(2, "done")]
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_steps_finished_between_subscribe_and_replay_reach_the_client_once_in_their_final_version(
    alice, monkeypatch
):
    """The seam: step 2 finishes and step 3 starts and finishes after the consumer subscribed but before
    its replay read them, so their live events wait in the channel while the replay already has the
    final versions: the client gets each step once, done."""
    session = await db(make_session)(alice)
    await db(add_step)(session, 1)
    running = await db(add_step)(session, 2, status=StepStatus.RUNNING)

    @pooled_db
    def load_after_the_host_moved_on(self):
        publish(finish_step(Step.objects.get(pk=running.pk)))
        third = add_step(session, 3, status=StepStatus.RUNNING)
        publish(third)
        publish(finish_step(third))
        return Session.objects.filter(pk=self.session_id).first()

    monkeypatch.setattr(consumers.SessionConsumer, "_load", load_after_the_host_moved_on)
    communicator = await connect(session.pk, user=alice)
    assert await receive_steps(communicator, 3) == [(1, "done"), (2, "done"), (3, "done")]
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_a_step_whose_live_event_was_lost_is_read_at_the_next_heartbeat(alice, settings):
    settings.WEBSOCKET_HEARTBEAT_S = 0.2
    session = await db(make_session)(alice)
    communicator = await connect(session.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await db(add_step)(session, 1)  # stored, never published
    assert await receive_steps(communicator, 1) == [(1, "done")]
    await communicator.disconnect()


async def test_the_end_follows_the_last_step_and_closes_the_stream(alice):
    session = await db(make_session)(alice)
    communicator = await connect(session.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await db(add_step)(session, 1)  # stored; its event lost
    assert await db(services.end)(session, EndReason.DELETED, actor=alice)
    assert await receive_steps(communicator, 1) == [(1, "done")]
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "end",
        "status": "ended",
        "end_reason": "deleted",
        "error": "",
    }
    assert await close_code(communicator) == 1000


async def test_an_ended_session_replays_its_transcript_then_the_end(alice):
    session = await db(make_session)(alice, status=Status.ENDED, end_reason=EndReason.IDLE_TIMEOUT)
    await db(add_step)(session, 1)
    await db(add_step)(session, 2)
    communicator = await connect(session.pk, user=alice, after=1)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "ended"}
    assert await receive_steps(communicator, 1) == [(2, "done")]
    end = await communicator.receive_json_from(timeout=5)
    assert (end["type"], end["end_reason"]) == ("end", "idle_timeout")
    assert await close_code(communicator) == 1000
