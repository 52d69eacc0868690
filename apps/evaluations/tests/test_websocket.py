"""WS /ws/evaluations/{id}/?after=N: who may connect, replay, the replay/live seam, the end."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from apps.accounts.models import ApiToken
from apps.evaluations import consumers, publisher, recording
from apps.evaluations.models import OutputChunk, Status
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.tests.factories import make_evaluation
from crucible import ws_db
from crucible.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

# What a browser on http://127.0.0.1:8000 sends: its Host, and the page's Origin.
HOST = (b"host", b"127.0.0.1:8000")
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def communicator_writer(send):
    """``crucible.ws_direct.writer_for`` for Channels' test communicator: writes a frame's text
    straight into what the test receives, as Daphne's writer writes it straight to the socket."""
    queue = getattr(send, "__self__", None)
    if not isinstance(queue, asyncio.Queue):
        return None

    def write(frame) -> bool:
        queue.put_nowait({"type": "websocket.send", "text": frame.text})
        return True

    return write


@pytest.fixture(autouse=True, params=["queued", "direct"])
def delivery(request, monkeypatch):
    """Every case twice: live chunks queued for each viewer's handler, and taken directly from the
    channel layer (crucible.channel_layer) and written at once, as under Daphne."""
    if request.param == "direct":
        monkeypatch.setattr("crucible.ws_direct.writer_for", communicator_writer)
    return request.param


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database thread keeps its connection; close it so the test database can go."""
    yield
    await database_sync_to_async(connections.close_all)()


def store_chunks(evaluation, seqs, stream="stdout"):
    for seq in seqs:
        OutputChunk.objects.create(evaluation=evaluation, seq=seq, stream=stream, data=f"line {seq}\n".encode())


def store_and_publish(evaluation_id, seq, stream="stdout"):
    """A chunk stored, then published (the order of a chunk whose live event was held back)."""
    chunk = OutputChunk.objects.create(
        evaluation_id=evaluation_id, seq=seq, stream=stream, data=f"line {seq}\n".encode()
    )
    publisher.publish_log(evaluation_id, chunk.seq, chunk.stream, chunk.text)


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def connect(evaluation_id, *, user=None, token=None, after=None, origin=ORIGIN):
    headers = [HOST] + ([origin] if origin else [])
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    path = f"/ws/evaluations/{evaluation_id}/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def close_code(communicator) -> int:
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    await communicator.disconnect()  # the client side of the closing handshake
    return message.get("code")


def without_ts(message: dict) -> dict:
    """A log message without its ``ts``, after checking it is the ISO 8601 time the chunk was recorded."""
    message = dict(message)
    ts = message.pop("ts")
    assert datetime.fromisoformat(ts).tzinfo is not None, ts
    return message


async def receive_logs(communicator, count):
    seqs = []
    while len(seqs) < count:
        message = await communicator.receive_json_from(timeout=5)
        if message["type"] == "log":
            seqs.append(message["seq"])
    return seqs


# --- who may connect ------------------------------------------------------------------------


async def test_an_anonymous_client_is_closed_with_4401(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, connected = await connect(evaluation.pk)
    assert connected
    assert await close_code(communicator) == 4401


async def test_an_unknown_or_revoked_token_is_closed_with_4401(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    token, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    await database_sync_to_async(token.revoke)()
    for bad in (key, "cru_not-a-real-token"):
        communicator, _ = await connect(evaluation.pk, token=bad)
        assert await close_code(communicator) == 4401


async def test_another_researchers_evaluation_is_closed_with_4404_like_a_missing_one(alice, bob):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    await database_sync_to_async(store_chunks)(evaluation, [1])
    for evaluation_id in (evaluation.pk, uuid.uuid4(), "not-a-uuid"):
        communicator, _ = await connect(evaluation_id, user=bob)
        assert await close_code(communicator) == 4404
        # Nothing about the evaluation was sent before the close.
        assert await communicator.receive_nothing(timeout=0.1)


async def test_the_owner_connects_with_a_session(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "queued"}
    await communicator.disconnect()


async def test_the_owner_connects_with_a_token(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    _, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator, _ = await connect(evaluation.pk, token=key)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "queued"}
    await communicator.disconnect()


async def test_an_operator_may_watch_anyones_evaluation(alice, olivia):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, _ = await connect(evaluation.pk, user=olivia)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await communicator.disconnect()


async def test_a_browser_from_another_origin_is_refused(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, connected = await connect(evaluation.pk, user=alice, origin=(b"origin", b"https://evil.example"))
    assert not connected
    await communicator.disconnect()


async def test_a_client_without_origin_authenticated_by_token_is_served(alice):
    """The CLI and scripts are not browsers: they send no Origin, and authenticate with a token."""
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    _token, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator, connected = await connect(evaluation.pk, token=key, origin=None)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await communicator.disconnect()


async def test_a_malformed_after_is_closed_with_4400(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, _ = await connect(evaluation.pk, user=alice, after="-1")
    assert await close_code(communicator) == 4400


# --- replay and live ------------------------------------------------------------------------


async def test_replay_sends_stored_chunks_after_the_given_seq_in_order(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    await database_sync_to_async(store_chunks)(evaluation, range(1, 6))
    communicator, _ = await connect(evaluation.pk, user=alice, after=2)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "running"}
    assert without_ts(await communicator.receive_json_from(timeout=5)) == {
        "type": "log",
        "seq": 3,
        "stream": "stdout",
        "data": "line 3\n",
    }
    assert await receive_logs(communicator, 2) == [4, 5]
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_live_chunks_and_statuses_follow_the_replay(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    await database_sync_to_async(store_chunks)(evaluation, [1])
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert await receive_logs(communicator, 1) == [1]
    await database_sync_to_async(store_and_publish)(evaluation.pk, 2, "stderr")
    message = await communicator.receive_json_from(timeout=5)
    assert without_ts(message) == {"type": "log", "seq": 2, "stream": "stderr", "data": "line 2\n"}
    await sync_to_async(publisher.publish_alert)(evaluation.pk, {"rule": "fork_bomb", "message": "many processes"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "alert",
        "rule": "fork_bomb",
        "message": "many processes",
    }
    await communicator.disconnect()


async def test_a_chunk_stored_while_the_replay_runs_arrives_exactly_once(alice, monkeypatch):
    """The seam: chunk 5 is stored and published after the consumer subscribed but before its
    replay read it, so it reaches the consumer twice (replay and live); the client sees it once."""
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    await database_sync_to_async(store_chunks)(evaluation, range(1, 5))
    monkeypatch.setattr(consumers, "REPLAY_BATCH", 2)
    original = consumers._stored_chunks  # each read of stored chunks, on the consumer's database thread
    calls = []

    def racing_chunks(evaluation_id, after, before):
        batch = original(evaluation_id, after, before)
        calls.append(after)
        if len(calls) == 1:  # mid-replay: the worker writes and publishes the next chunk
            store_and_publish(evaluation.pk, 5)
        return batch

    monkeypatch.setattr(consumers, "_stored_chunks", racing_chunks)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert await receive_logs(communicator, 5) == [1, 2, 3, 4, 5]
    assert len(calls) >= 3  # chunk 5 really came from the replay too
    await database_sync_to_async(store_and_publish)(evaluation.pk, 6)
    assert await receive_logs(communicator, 1) == [6]  # the live copy of 5 was dropped, 6 is next
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_a_chunk_stored_after_the_last_replay_read_arrives_live(alice, monkeypatch):
    """The other side of the seam: the replay has read everything, then chunk 3 is stored."""
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    await database_sync_to_async(store_chunks)(evaluation, [1, 2])
    original = consumers._stored_chunks  # each read of stored chunks, on the consumer's database thread

    def racing_chunks(evaluation_id, after, before):
        batch = original(evaluation_id, after, before)
        if after == 0:
            store_and_publish(evaluation.pk, 3)
        return batch

    monkeypatch.setattr(consumers, "_stored_chunks", racing_chunks)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert await receive_logs(communicator, 3) == [1, 2, 3]
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_lost_live_events_are_filled_from_the_database(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    # Chunks 1 and 2 are stored but their events never arrive (e.g. Redis hiccupped); 3 does.
    await database_sync_to_async(store_chunks)(evaluation, [1, 2])
    await database_sync_to_async(store_and_publish)(evaluation.pk, 3)
    assert await receive_logs(communicator, 3) == [1, 2, 3]
    await communicator.disconnect()


async def test_a_chunk_lost_with_its_stored_mark_arrives_at_the_second_heartbeat_after_it_was_stored(alice, settings):
    """A heartbeat reads only what was stored by the previous one and has not arrived: a chunk stored
    since is most likely still queued for this connection behind a backlog, not lost."""
    settings.WEBSOCKET_HEARTBEAT_S = 1.0
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await database_sync_to_async(store_chunks)(evaluation, [1])  # neither the chunk nor its mark published
    assert await communicator.receive_nothing(timeout=1.3)  # the first heartbeat (~1 s) leaves it
    assert await receive_logs(communicator, 1) == [1]  # the second (~2 s) reads it
    await communicator.disconnect()


def count_encoded(monkeypatch) -> list:
    """Every value JSON-encoded from now on, in order."""
    encoded = []
    dumps = json.dumps

    def counting(value, *args, **kwargs):
        encoded.append(value)
        return dumps(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", counting)
    return encoded


async def running_with_viewers(user, count: int):
    """A running evaluation of ``user`` and ``count`` of their viewers, each past its first status."""
    evaluation = await database_sync_to_async(make_evaluation)(user, status=Status.RUNNING)
    viewers = [(await connect(evaluation.pk, user=user))[0] for _ in range(count)]
    for communicator in viewers:
        assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    return evaluation, viewers


async def test_a_live_chunk_is_encoded_once_for_every_viewer_of_the_process(alice, monkeypatch):
    evaluation, viewers = await running_with_viewers(alice, 3)
    encoded = count_encoded(monkeypatch)
    await database_sync_to_async(store_and_publish)(evaluation.pk, 1)
    texts = [await communicator.receive_from(timeout=5) for communicator in viewers]
    assert len(set(texts)) == 1
    assert json.loads(texts[0])["seq"] == 1
    assert [value["seq"] for value in encoded if isinstance(value, dict) and value.get("type") == "log"] == [1]
    for communicator in viewers:
        await communicator.disconnect()


async def test_a_runs_status_and_end_are_encoded_once_for_every_viewer_of_the_process(alice, monkeypatch):
    """When a run ends, all its viewers are sent the same status and end at once: each is encoded once."""
    evaluation, viewers = await running_with_viewers(alice, 3)
    encoded = count_encoded(monkeypatch)

    def finish():
        evaluation.finish(Status.SUCCEEDED, exit_code=0)
        publisher.publish_end(evaluation, stored_seq=0)

    await database_sync_to_async(finish)()
    for communicator in viewers:
        assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "succeeded"}
        assert (await communicator.receive_json_from(timeout=5))["type"] == "end"
        assert await close_code(communicator) == 1000
    sent = [value["type"] for value in encoded if isinstance(value, dict) and value.get("type") in ("status", "end")]
    assert sorted(sent) == ["end", "status"]


async def test_a_viewer_takes_its_messages_without_a_task_per_message(alice):
    """Channels' loop made a task for each message from the channel layer; ours drains it in one."""
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    loop, receivers = asyncio.get_running_loop(), []

    def counting_factory(loop, coro, **kwargs):
        if "receive" in getattr(coro, "__qualname__", "") or "proxy" in getattr(coro, "__qualname__", ""):
            receivers.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting_factory)
    try:
        for seq in range(1, 31):
            await database_sync_to_async(store_and_publish)(evaluation.pk, seq)
        assert await receive_logs(communicator, 30) == list(range(1, 31))
    finally:
        loop.set_task_factory(None)
    assert receivers == []
    await communicator.disconnect()


async def idle_viewers(evaluation, user, count: int = 3) -> list:
    """Viewers whose connect (and its replay) is over: each has been sent line 1 since."""
    viewers = [(await connect(evaluation.pk, user=user))[0] for _ in range(count)]
    for communicator in viewers:
        assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await sync_to_async(publisher.publish_log)(evaluation.pk, 1, "stdout", "line 1\n")
    for communicator in viewers:
        assert await receive_logs(communicator, 1) == [1]
    return viewers


def events_handled(monkeypatch) -> list[str]:
    """The kinds of the events the viewers' handler runs for, from now on."""
    handled = []
    handler = consumers.EvaluationConsumer.evaluation_event

    async def counting(self, message):
        handled.append(message["event"]["type"])
        await handler(self, message)

    monkeypatch.setattr(consumers.EvaluationConsumer, "evaluation_event", counting)
    return handled


@pytest.mark.parametrize("delivery", ["direct"], indirect=True)
async def test_live_chunks_are_written_to_every_viewer_without_running_their_handlers(
    alice, delivery, monkeypatch, settings
):
    monkeypatch.setattr(consumers.EvaluationConsumer, "recheck_s", 60)  # the first check holds throughout
    settings.WEBSOCKET_HEARTBEAT_S = 300  # and no heartbeat takes the viewer's turn meanwhile
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    viewers = await idle_viewers(evaluation, alice)
    handled = events_handled(monkeypatch)

    def worker_prints():
        for seq in range(2, 22):
            publisher.publish_log(evaluation.pk, seq, "stdout", f"line {seq}\n")

    await sync_to_async(worker_prints, thread_sensitive=False)()
    for communicator in viewers:
        assert await receive_logs(communicator, 20) == list(range(2, 22))
    assert handled.count("log") < 20 * len(viewers) / 2  # only those that came while a handler ran
    for communicator in viewers:
        await communicator.disconnect()


@pytest.mark.parametrize("delivery", ["direct"], indirect=True)
async def test_a_live_chunk_never_overtakes_a_status_whose_handler_is_still_running(alice, delivery):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    evaluation.status = Status.SUCCEEDED  # the status handler re-checks the permission first

    def worker_ends():
        publisher.publish_status(evaluation)
        for seq in range(1, 6):
            publisher.publish_log(evaluation.pk, seq, "stdout", f"line {seq}\n")

    await sync_to_async(worker_ends, thread_sensitive=False)()
    received = [await communicator.receive_json_from(timeout=5) for _ in range(6)]
    assert [(m["type"], m.get("seq")) for m in received] == [("status", None)] + [("log", seq) for seq in range(1, 6)]
    await communicator.disconnect()


SAMPLE = {
    "at": "2026-12-01T12:00:00+00:00",
    "cpu_percent": 12.5,
    "memory_bytes": 1024,
    "pids": 3,
    "output_bytes_per_s": 10.0,
    "processes": {"python3": 1},
}


@pytest.mark.parametrize("delivery", ["direct"], indirect=True)
async def test_stored_marks_a_viewer_is_not_behind_and_samples_need_no_handler(alice, delivery, monkeypatch, settings):
    monkeypatch.setattr(consumers.EvaluationConsumer, "recheck_s", 60)  # the first check holds throughout
    settings.WEBSOCKET_HEARTBEAT_S = 300  # and no heartbeat takes the viewer's turn meanwhile
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    [communicator] = await idle_viewers(evaluation, alice, count=1)
    handled = []
    for name in ("evaluation_event", "evaluation_stored"):
        handler = getattr(consumers.EvaluationConsumer, name)

        async def counting(self, message, handler=handler):
            handled.append(message["type"])
            await handler(self, message)

        monkeypatch.setattr(consumers.EvaluationConsumer, name, counting)

    def worker_runs():
        for seq in range(2, 5):
            publisher.publish_log(evaluation.pk, seq, "stdout", f"line {seq}\n")
        publisher.publish_stored(evaluation.pk, 4)
        publisher.publish_sample(evaluation.pk, SAMPLE)

    await sync_to_async(worker_runs, thread_sensitive=False)()
    assert await receive_logs(communicator, 3) == [2, 3, 4]
    sample = await communicator.receive_json_from(timeout=5)
    assert sample == {"type": "sample", **SAMPLE}
    assert await communicator.receive_nothing(timeout=0.3)
    assert handled == []
    await communicator.disconnect()


@pytest.mark.parametrize("delivery", ["direct"], indirect=True)
async def test_a_busy_streams_viewers_keep_taking_lines_directly_past_the_permission_recheck(
    alice, delivery, monkeypatch
):
    """Their shared answer is asked anew before it runs out, not by every viewer when it has."""
    monkeypatch.setattr(consumers.EvaluationConsumer, "recheck_s", 1.0)
    monkeypatch.setattr("crucible.ws_auth.REFRESH_AHEAD", 0.5)  # half a second to refresh, even on a loaded machine
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    viewers = await idle_viewers(evaluation, alice)
    handled = events_handled(monkeypatch)
    for seq in range(2, 82):  # 4 s of lines: four re-check periods
        await sync_to_async(publisher.publish_log)(evaluation.pk, seq, "stdout", f"line {seq}\n")
        await asyncio.sleep(0.05)
    for communicator in viewers:
        assert await receive_logs(communicator, 80) == list(range(2, 82))
    # Each viewer re-checking by itself when its answer ran out would have handled about 12 lines.
    assert handled.count("log") <= 6, handled
    for communicator in viewers:
        await communicator.disconnect()


@pytest.mark.parametrize("delivery", ["direct"], indirect=True)
async def test_a_token_revoked_while_lines_stream_directly_closes_the_stream(alice, delivery, monkeypatch):
    monkeypatch.setattr(consumers.EvaluationConsumer, "recheck_s", 0.3)
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    token, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator, _ = await connect(evaluation.pk, token=key)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await sync_to_async(publisher.publish_log)(evaluation.pk, 1, "stdout", "before\n")
    assert await receive_logs(communicator, 1) == [1]
    await database_sync_to_async(token.revoke)()
    closed = None
    for seq in range(2, 62):  # 3 s of lines
        await sync_to_async(publisher.publish_log)(evaluation.pk, seq, "stdout", f"line {seq}\n")
        await asyncio.sleep(0.05)
        while not await communicator.receive_nothing(timeout=0.01):
            message = await communicator.receive_output(timeout=1)
            if message["type"] == "websocket.close":
                closed = message.get("code")
                break
        if closed is not None:
            break
    assert closed == 4401


async def test_a_chunk_published_before_it_is_stored_reaches_a_watching_viewer_at_once(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await sync_to_async(publisher.publish_log)(evaluation.pk, 1, "stdout", "hello\n")  # no row yet
    assert without_ts(await communicator.receive_json_from(timeout=5)) == {
        "type": "log",
        "seq": 1,
        "stream": "stdout",
        "data": "hello\n",
    }
    await database_sync_to_async(store_chunks)(evaluation, [1])
    await sync_to_async(publisher.publish_stored)(evaluation.pk, 1)
    assert await communicator.receive_nothing(timeout=0.2)  # the stored copy is not sent again
    await communicator.disconnect()


async def test_a_viewer_joining_while_chunks_wait_to_be_stored_gets_every_chunk_once_in_order(alice, monkeypatch):
    """Alice's run printed 3 and 4 before she connected, but they are not stored yet: her replay
    ends at 2 and 5 arrives live. She sees 5 only after 3 and 4, which come when the batch is stored."""
    monkeypatch.setattr(recording, "FLUSH_INTERVAL_S", 3600)  # batches are stored when the test says
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    recorder = OutputRecorder(evaluation.pk)
    write = database_sync_to_async(recorder.write)
    for n in (1, 2):
        await write("stdout", f"line {n}\n".encode())
    await database_sync_to_async(recorder.flush_all)()
    await write("stdout", b"line 3\n")
    await write("stderr", b"line 4\n")  # published to nobody, not stored yet
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert await receive_logs(communicator, 2) == [1, 2]
    await write("stdout", b"line 5\n")
    assert await communicator.receive_nothing(timeout=0.3)  # 5 is held: 3 and 4 come first
    await database_sync_to_async(recorder.flush_all)()
    received = [await communicator.receive_json_from(timeout=5) for _ in range(3)]
    assert [(m["seq"], m["stream"], m["data"]) for m in received] == [
        (3, "stdout", "line 3\n"),
        (4, "stderr", "line 4\n"),
        (5, "stdout", "line 5\n"),
    ]
    await write("stdout", b"line 6\n")
    assert await receive_logs(communicator, 1) == [6]
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_held_chunks_come_before_the_end_even_without_a_stored_mark(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await sync_to_async(publisher.publish_log)(evaluation.pk, 2, "stdout", "line 2\n")  # 1 never arrived live
    assert await communicator.receive_nothing(timeout=0.3)  # 2 is held: 1 is neither sent nor stored

    def finish():
        store_chunks(evaluation, [1, 2])  # stored, the mark lost
        evaluation.finish(Status.SUCCEEDED, exit_code=0)
        publisher.publish_end(evaluation)

    await database_sync_to_async(finish)()
    assert await receive_logs(communicator, 2) == [1, 2]
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "succeeded"}
    assert (await communicator.receive_json_from(timeout=5))["type"] == "end"
    assert await close_code(communicator) == 1000


async def test_the_end_is_sent_after_every_chunk_and_closes_the_stream(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"

    def finish():
        store_chunks(evaluation, [1])  # stored, its event lost
        evaluation.finish(Status.FAILED, exit_code=3)
        publisher.publish_end(evaluation)

    await database_sync_to_async(finish)()
    assert await receive_logs(communicator, 1) == [1]
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "failed"}
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "end",
        "status": "failed",
        "exit_code": 3,
        "reason": "exit",
    }
    assert await close_code(communicator) == 1000


async def test_the_workers_end_says_the_output_is_stored_so_a_viewer_that_has_it_all_reads_nothing(alice, monkeypatch):
    """The worker's end carries how far the output is stored: a viewer that has every chunk sends the
    status and the end without reading the run's state, its permission checked once for both."""
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await database_sync_to_async(store_and_publish)(evaluation.pk, 1)
    assert await receive_logs(communicator, 1) == [1]
    state_reads, access_checks = [], []
    read_state, ask_access = consumers._stream_state, consumers.EvaluationConsumer._ask_access
    monkeypatch.setattr(consumers, "_stream_state", lambda *a: state_reads.append(a) or read_state(*a))
    monkeypatch.setattr(
        consumers.EvaluationConsumer, "_ask_access", lambda self: access_checks.append(1) or ask_access(self)
    )

    def finish():
        evaluation.finish(Status.SUCCEEDED, exit_code=0)
        publisher.publish_end(evaluation, stored_seq=1)

    await database_sync_to_async(finish)()
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "succeeded"}
    assert (await communicator.receive_json_from(timeout=5))["type"] == "end"
    assert await close_code(communicator) == 1000
    assert state_reads == [] and len(access_checks) == 1


async def test_chunks_the_workers_end_says_are_stored_come_before_it_when_their_events_were_lost(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"

    def finish():
        store_chunks(evaluation, [1, 2])  # stored, their events lost
        evaluation.finish(Status.SUCCEEDED, exit_code=0)
        publisher.publish_end(evaluation, stored_seq=2)

    await database_sync_to_async(finish)()
    assert await receive_logs(communicator, 2) == [1, 2]
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "succeeded"}
    assert (await communicator.receive_json_from(timeout=5))["type"] == "end"
    assert await close_code(communicator) == 1000


async def test_a_viewers_handshake_reads_the_row_and_its_stored_output_in_one_call_to_the_database_threads(
    alice, monkeypatch
):
    """In a storm of handshakes every call waits for a database thread (and its connection's check):
    after the throttle, the token and the permission, the row and the first batch of stored output
    come in one."""
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    await database_sync_to_async(store_chunks)(evaluation, [1, 2, 3])
    _, key = await database_sync_to_async(ApiToken.issue)(alice, "alice's script")
    calls = []
    call = ws_db._OnKeptConnections.__call__

    async def counted(self, *args, **kwargs):
        calls.append(self.func.__name__)
        return await call(self, *args, **kwargs)

    monkeypatch.setattr(ws_db._OnKeptConnections, "__call__", counted)
    communicator, _ = await connect(evaluation.pk, token=key)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "running"}
    assert await receive_logs(communicator, 3) == [1, 2, 3]
    assert calls == ["_blocked", "_check_token", "_access_denied", "_open_stream"]
    await communicator.disconnect()


async def test_a_finished_evaluation_replays_then_ends_and_closes(alice):
    evaluation = await database_sync_to_async(make_evaluation)(
        alice, status=Status.SUCCEEDED, exit_code=0, reason="exit"
    )
    await database_sync_to_async(store_chunks)(evaluation, [1, 2, 3])
    communicator, _ = await connect(evaluation.pk, user=alice, after=1)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "succeeded"}
    assert await receive_logs(communicator, 2) == [2, 3]
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "end",
        "status": "succeeded",
        "exit_code": 0,
        "reason": "exit",
    }
    assert await close_code(communicator) == 1000


# --- permission is checked again later -------------------------------------------------------


async def test_a_token_revoked_while_watching_closes_the_stream(alice, monkeypatch):
    monkeypatch.setattr(consumers.EvaluationConsumer, "recheck_s", 0)
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    token, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator, _ = await connect(evaluation.pk, token=key)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await database_sync_to_async(token.revoke)()
    await database_sync_to_async(store_and_publish)(evaluation.pk, 1)
    assert await close_code(communicator) == 4401


async def test_a_user_deactivated_while_watching_is_closed(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    alice.is_active = False
    await database_sync_to_async(alice.save)()
    await sync_to_async(publisher.publish_status)(evaluation)  # status events are always re-checked
    assert await close_code(communicator) == 4401


async def test_every_viewer_sharing_a_check_is_checked_after_the_event_that_needs_it(alice, olivia):
    """Alice's viewers share one permission check per status event (asked once it arrived): her
    deactivation closes all of them, while olivia, watching the same run, is checked on her own."""
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    alices = [(await connect(evaluation.pk, user=alice))[0] for _ in range(3)]
    olivias, _ = await connect(evaluation.pk, user=olivia)
    for communicator in [*alices, olivias]:
        assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    alice.is_active = False
    await database_sync_to_async(alice.save)()
    await sync_to_async(publisher.publish_status)(evaluation)
    assert [await close_code(communicator) for communicator in alices] == [4401, 4401, 4401]
    assert (await olivias.receive_json_from(timeout=5))["type"] == "status"
    await olivias.disconnect()


async def test_an_operator_who_loses_the_role_while_watching_is_not_allowed(alice, olivia):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, _ = await connect(evaluation.pk, user=olivia)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    olivia.is_staff = False
    await database_sync_to_async(olivia.save)()
    await sync_to_async(publisher.publish_status)(evaluation)
    assert await close_code(communicator) == 4403
