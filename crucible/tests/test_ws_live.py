"""WebSockets against real Daphne processes (tests/stack.py), as an attacker and a patient user would
use them: idle for over a minute, from another origin, many connections across two processes,
hostile paths and messages. The stack runs on the test database and this process's Redis database,
with a limit of 3 connections per user and a heartbeat of 1 s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from asgiref.sync import async_to_sync
from django.db import connection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from apps.accounts.models import ApiToken
from apps.evaluations import publisher
from apps.evaluations.models import OutputChunk, Status
from apps.evaluations.tests.factories import make_evaluation
from apps.monitoring.alerts import raise_alert
from crucible import ws_limits
from crucible.tests.ws import session_cookie
from tests.stack import Stack, TestDatabaseStack, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 3
HEARTBEAT_S = 1  # leases of 3 s
IDLE_S = 65


@pytest.fixture(scope="module")
def daphnes(django_db_setup, django_db_blocker, tmp_path_factory):
    """Two Daphne processes (and one worker) on the same database and Redis: what a scaled-out site runs."""
    logs = tmp_path_factory.mktemp("ws-live")
    first = TestDatabaseStack(connection.settings_dict["NAME"], logs)
    first.env.update(WEBSOCKET_MAX_PER_USER=str(LIMIT), WEBSOCKET_HEARTBEAT_S=str(HEARTBEAT_S))
    first.start()
    second = Stack(first.env, logs / "second", workers=0, name="second-web")
    try:
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


@pytest.fixture
def web(daphnes):
    """The first stack; the test ends once its worker is idle (tests/stack.py, ``settle``)."""
    yield daphnes[0]
    daphnes[0].settle()


@pytest.fixture
def sockets():
    """Connections a test keeps open across steps; all closed when it ends."""
    with contextlib.ExitStack() as stack:
        yield stack


def key_for(user) -> str:
    return ApiToken.issue(user, "live")[1]


def as_script(stack, path: str, key: str) -> ClientConnection:
    """A script's connection: a token header and no Origin."""
    return connect(stack.ws_url + path, additional_headers={"Authorization": f"Token {key}"}, open_timeout=10)


def as_browser(stack, path: str, user, origin: str | None = None) -> ClientConnection:
    """A browser's connection: the session cookie, and the Origin of the page that opens it."""
    return connect(
        stack.ws_url + path,
        origin=origin or stack.url,
        additional_headers={"Cookie": session_cookie(user).decode()},
        open_timeout=10,
    )


def next_message(socket: ClientConnection, timeout: float = 10) -> dict:
    return json.loads(socket.recv(timeout=timeout))


def closed_with(socket: ClientConnection, timeout: float = 10) -> int:
    """The server's close code, after any messages sent before it."""
    try:
        while True:
            socket.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def submit(stack, key: str, code: str) -> str:
    response = requests.post(
        stack.url + "/api/v1/evaluations/",
        json={"code": code, "timeout_s": 30},
        headers={"Authorization": f"Token {key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def read_until_end(socket: ClientConnection, timeout: float = 90) -> tuple[str, dict]:
    text, seen, deadline = "", [], time.monotonic() + timeout
    while True:
        try:
            message = next_message(socket, max(0.1, deadline - time.monotonic()))
        except ConnectionClosed as closed:
            raise AssertionError(f"closed before the end ({closed}) after {len(seen)} messages: {seen[-5:]}") from None
        seen.append(message)
        if message["type"] == "log":
            text += message["data"]
        elif message["type"] == "end":
            return text, message


def test_idle_streams_stay_open_for_over_a_minute_and_still_deliver(web, sockets, alice, olivia):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    stream = sockets.enter_context(as_script(web, f"/ws/evaluations/{evaluation.pk}/", key_for(alice)))
    feed = sockets.enter_context(as_browser(web, "/ws/alerts/", olivia))
    assert next_message(stream) == {"type": "status", "status": "running"}
    assert next_message(feed)["type"] == "alerts"
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # nothing to say, and the connection stays open
        stream.recv(timeout=IDLE_S)
    with pytest.raises(TimeoutError):
        feed.recv(timeout=0.5)
    assert time.monotonic() - started >= 60

    chunk = OutputChunk.objects.create(evaluation=evaluation, seq=1, stream="stdout", data=b"still here\n")
    publisher.publish_log(evaluation.pk, chunk.seq, chunk.stream, chunk.text, chunk.created_at)
    message = next_message(stream)
    assert message.pop("ts") == chunk.created_at.isoformat()
    assert message == {"type": "log", "seq": 1, "stream": "stdout", "data": "still here\n"}
    alert = raise_alert(evaluation_id=evaluation.pk, rule_name="idle-check", severity="warning", message="hello")
    publisher.publish_alert(evaluation.pk, alert.as_message())
    message = next_message(feed)
    while message.get("evaluation_id") != str(evaluation.pk):  # other tests' alerts share the group
        message = next_message(feed)
    assert message["type"] == "alert" and message["rule"] == "idle-check"
    assert "Timeout reading from" not in web.logs()


def test_a_page_on_another_port_or_scheme_cannot_open_a_users_streams(web, alice, olivia):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    port = web.url.rsplit(":", 1)[1]
    for origin in ("http://127.0.0.1:9999", f"https://127.0.0.1:{port}", f"http://localhost:{port}"):
        for user, path in ((alice, f"/ws/evaluations/{evaluation.pk}/"), (olivia, "/ws/alerts/")):
            with pytest.raises(InvalidStatus) as refused, as_browser(web, path, user, origin=origin):
                pass
            assert refused.value.response.status_code == 403, origin
    with as_browser(web, f"/ws/evaluations/{evaluation.pk}/", alice) as own:
        assert next_message(own)["type"] == "status"


def test_connections_are_counted_across_daphne_processes(daphnes, sockets, alice):
    first, second = daphnes
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    path, key = f"/ws/evaluations/{evaluation.pk}/", key_for(alice)
    held = [sockets.enter_context(as_script(stack, path, key)) for stack in (first, first, second)]
    for socket in held:
        assert next_message(socket)["type"] == "status"
    for stack in (second, first):
        with as_script(stack, path, key) as extra:
            assert closed_with(extra) == 4429
    held.pop(0).close()
    # Daphne gives the slot back once the consumer has seen the goodbye, a moment after the close.
    wait_until(lambda: async_to_sync(ws_limits.held)(alice.pk) < LIMIT, 10, what="the slot to be given back")
    held.append(sockets.enter_context(as_script(second, path, key)))
    assert next_message(held[-1])["type"] == "status"


def test_slots_held_by_a_daphne_killed_without_goodbye_are_free_after_their_lease(web, tmp_path, sockets, alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    path, key = f"/ws/evaluations/{evaluation.pk}/", key_for(alice)
    doomed = Stack(web.env, tmp_path, workers=0, name="doomed-web").start()
    try:
        for _ in range(LIMIT):
            assert next_message(sockets.enter_context(as_script(doomed, path, key)))["type"] == "status"
        doomed.kill_web()  # SIGKILL: no consumer gets to give its slot back
    finally:
        doomed.stop()
    with as_script(web, path, key) as early:
        assert closed_with(early) == 4429
    time.sleep(HEARTBEAT_S * ws_limits.LEASE_HEARTBEATS + 0.5)
    with as_script(web, path, key) as later:
        assert next_message(later)["type"] == "status"


@pytest.mark.docker
@pytest.mark.usefixtures("empty_queues")
def test_bobs_live_stream_ends_while_alice_holds_more_connections_than_her_limit(web, sockets, alice, bob):
    """Alice's busy run has every connection she may hold, and she keeps asking for more; bob's
    stream of his own run still gets all of its output and its end."""

    alice_key, bob_key = key_for(alice), key_for(bob)
    submit_as = functools.partial(submit, web)
    busy = "import time\nfor i in range(400):\n    print('line', i, flush=True)\n    time.sleep(0.01)\n"
    alices = submit_as(alice_key, busy)
    alice_streams = [
        sockets.enter_context(as_script(web, f"/ws/evaluations/{alices}/", alice_key)) for _ in range(LIMIT)
    ]
    # Alice's viewers read all the time, as browsers do.
    with ThreadPoolExecutor(LIMIT) as viewers:
        watched = [viewers.submit(read_until_end, socket) for socket in alice_streams]
        for _ in range(5):
            with as_script(web, f"/ws/evaluations/{alices}/", alice_key) as extra:
                assert closed_with(extra) == 4429
        bobs = submit_as(bob_key, "print('bob was here')")
        with as_script(web, f"/ws/evaluations/{bobs}/", bob_key) as bob_stream:
            text, end = read_until_end(bob_stream)
            assert text == "bob was here\n"
            assert end["status"] == "succeeded" and end["exit_code"] == 0
            assert closed_with(bob_stream) == 1000
        for viewer in watched:
            text, end = viewer.result(timeout=90)
            assert end["status"] == "succeeded" and text.count("\n") == 400


def test_hostile_paths_queries_and_messages_get_clear_close_codes(web, alice):
    key = key_for(alice)
    for path in ("/ws/nothing/", "/ws/evaluations/%ff%00/", "/ws/alerts/%2e%2e/", "/ws/%E2%91%A0/"):
        with as_script(web, path, key) as socket:
            assert closed_with(socket) == 4404, path
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    for after in ("%C2%B2", "%E2%91%A0", "-1", "9" * 40):
        with as_script(web, f"/ws/evaluations/{evaluation.pk}/?after={after}", key) as socket:
            assert closed_with(socket) == 4400, after
    for message, codes in (
        ("[" * 2000 + "]" * 2000, {4400}),
        ("[" * 5000, {4413}),
        # Over Daphne's own 1 MiB limit: autobahn fails the connection (1009, or a drop) before the consumer.
        ("x" * (2 * 1024 * 1024), {1009, None}),
    ):
        with as_script(web, f"/ws/evaluations/{evaluation.pk}/", key) as socket:
            assert next_message(socket)["type"] == "status"
            try:
                socket.send(message)
            except ConnectionClosed as closed:  # refused while it was still being sent (the 2 MiB one)
                code = closed.rcvd.code if closed.rcvd else None
            else:
                code = closed_with(socket)
            assert code in codes, (len(message), code)


def test_a_busy_runs_viewers_by_token_and_by_browser_get_every_line_once_in_order_written_directly(web, sockets, alice):
    """Daphne writes live lines straight to each connection, framed once (crucible.ws_direct)."""
    key = key_for(alice)
    busy = "import time\nfor i in range(300):\n    print('line', i, flush=True)\n    time.sleep(0.005)\n"
    run = submit(web, key, busy)
    path = f"/ws/evaluations/{run}/"
    streams = [sockets.enter_context(as_script(web, path, key)) for _ in range(LIMIT - 1)]
    streams.append(sockets.enter_context(as_browser(web, path, alice)))

    def every_message(socket) -> list[dict]:
        messages = []
        while not messages or messages[-1]["type"] != "end":
            messages.append(next_message(socket, timeout=60))
        return messages

    with ThreadPoolExecutor(len(streams)) as viewers:
        seen = list(viewers.map(every_message, streams))
    for messages in seen:
        logs = [message for message in messages if message["type"] == "log"]
        assert [message["seq"] for message in logs] == list(range(1, len(logs) + 1))
        assert "".join(message["data"] for message in logs) == "".join(f"line {i}\n" for i in range(300))
        assert messages[-1]["status"] == "succeeded"
    assert "written directly to each connection" in (web.log_dir / "web.log").read_text(errors="replace")
