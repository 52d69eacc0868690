"""Hostile WebSocket input gets a clear close code, never 1011 or a 500 at the handshake.

* a path that names no stream: accepted, then closed 4404;
* ``?after=`` that is not a plain ASCII number of at most 12 digits (``²``, ``①``, negative, huge): 4400;
* a client message (clients have nothing to say): JSON is ignored; over 4 KiB closes 4413 (above
  Daphne's own limit of 1 MiB, Daphne fails it first); not JSON, binary or nested too deeply to
  parse closes 4400.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from apps.accounts.models import ApiToken
from apps.evaluations.models import Status
from apps.evaluations.tests.factories import make_evaluation
from crucible.tests.ws import close_code, feed_from, open_socket
from crucible.ws_auth import MAX_CLIENT_MESSAGE_BYTES, CloseCode

pytestmark = pytest.mark.django_db(transaction=True)

NESTED = "[" * 2000 + "]" * 2000  # under the size cap, deeper than Python's recursion limit


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database thread keeps its connection; close it so the test database can go."""
    yield
    await database_sync_to_async(connections.close_all)()


async def alices_stream(alice, **kwargs):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    communicator, connected = await open_socket(f"/ws/evaluations/{evaluation.pk}/", user=alice, **kwargs)
    assert connected
    return communicator


@pytest.mark.parametrize(
    "path",
    [
        "/ws/nothing-here/",
        "/",
        "/ws/",
        "/ws/evaluations/",
        "/ws/evaluations/1/extra/",
        "/ws/alerts",
        "/ws/alerts/%00/",
        "/ws/evaluations/%ff%fe/",
        "/ws/évaluations/①/",
    ],
)
async def test_a_path_that_names_no_stream_is_closed_with_4404(path, alice):
    communicator, connected = await open_socket(path, user=alice)
    assert connected
    assert await close_code(communicator) == 4404


@pytest.mark.parametrize(
    "after",
    ["²", "①", "١٢", "%C2%B2", "-1", "1e3", "0x10", " 1", "%00", "%ff", "9" * 13, "9" * 5000, "1&after=²"],
)
async def test_an_after_that_is_not_a_plain_number_is_closed_with_4400(after, alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, connected = await open_socket(f"/ws/evaluations/{evaluation.pk}/?after={after}", user=alice)
    assert connected
    assert await close_code(communicator) == 4400
    assert await communicator.receive_nothing(timeout=0.1)


async def test_a_plain_after_of_twelve_digits_is_served(alice):
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    communicator, _ = await open_socket(f"/ws/evaluations/{evaluation.pk}/?after=999999999999", user=alice)
    assert await communicator.receive_json_from(timeout=5) == {"type": "status", "status": "queued"}
    await communicator.disconnect()


async def test_a_json_message_from_the_client_is_ignored(alice):
    communicator = await alices_stream(alice)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    for message in ('{"type": "ping"}', "[]", '"\\ud800"', "1e400"):
        await communicator.send_to(text_data=message)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"text_data": NESTED}, id="nested-2000-deep"),
        pytest.param({"text_data": "not json"}, id="not-json"),
        pytest.param({"text_data": "\ud800"}, id="lone-surrogate"),
        pytest.param({"text_data": '{"a": "\x00'}, id="nul-unterminated"),
        pytest.param({"bytes_data": b"\x00\xff"}, id="binary"),
    ],
)
async def test_a_message_that_is_not_json_closes_with_4400(message, alice):
    communicator = await alices_stream(alice)
    await communicator.send_to(**message)
    assert await close_code(communicator) == 4400


@pytest.mark.parametrize("size", [MAX_CLIENT_MESSAGE_BYTES + 1, 5_000_000])
async def test_a_message_over_the_size_cap_closes_with_4413(size, alice):
    communicator = await alices_stream(alice)
    await communicator.send_to(text_data="[" * size)
    assert await close_code(communicator) == 4413


async def test_the_operators_feed_refuses_the_same_messages(olivia):
    for message, code in (({"text_data": NESTED}, 4400), ({"text_data": "x" * 10_000}, 4413)):
        communicator, connected = await open_socket("/ws/alerts/", user=olivia)
        assert connected
        await communicator.send_to(**message)
        assert await close_code(communicator) == code


async def test_guessing_tokens_on_websockets_is_throttled_like_the_api(olivia, settings):
    settings.SIGNIN_IP_LIMIT = (3, 300)
    _, key = await database_sync_to_async(ApiToken.issue)(olivia, "olivia's script")
    assert await feed_from("203.0.113.7", key) is None  # served
    for _ in range(3):
        assert await feed_from("203.0.113.7", "not-a-token-" + "x" * 30) == CloseCode.NOT_SIGNED_IN
    # The guesser's address is now refused even with a real token; the same token elsewhere works.
    assert await feed_from("203.0.113.7", key) == CloseCode.NOT_SIGNED_IN
    assert await feed_from("198.51.100.2", key) is None
