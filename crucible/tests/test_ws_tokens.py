"""The handshake's token check, shared by a process's handshakes that name the same key.

A script that opens a hundred viewers at once names one token a hundred times; what the key is worth
is read once and shared for at most ``TOKEN_ANSWER_MAX_AGE_S``. The throttle still sees every
attempt (each is checked against it, attempts from one address at the same moment sharing one read,
and each failure counts), a refusal is never remembered, a
revoked token is refused once the shared answer is older than the bound, and two keys never share
an answer.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from apps.accounts.models import ApiToken
from apps.evaluations.models import Status
from apps.evaluations.tests.factories import make_evaluation
from crucible import ws_auth
from crucible.tests.ws import feed_from, open_socket
from crucible.ws_auth import CloseCode

pytestmark = pytest.mark.django_db(transaction=True)

GUESS = "not-a-token-" + "x" * 30


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database thread keeps its connection; close it so the test database can go."""
    yield
    await database_sync_to_async(connections.close_all)()


@pytest.fixture
def key_checks(monkeypatch):
    """Every key the database is asked about, in order."""
    asked = []
    check_key = ApiToken.check_key

    def counting(key):
        asked.append(key)
        return check_key(key)

    monkeypatch.setattr(ApiToken, "check_key", counting)
    return asked


async def issue(user, name: str) -> tuple[ApiToken, str]:
    return await database_sync_to_async(ApiToken.issue)(user, name)


async def watch_with(key: str, evaluation) -> int | None:
    """A script opens the evaluation's stream with ``key``: None when its status arrives, else the close code."""
    communicator, connected = await open_socket(f"/ws/evaluations/{evaluation.pk}/", token=key, origin=None)
    assert connected
    first = await communicator.receive_output(timeout=10)
    if first["type"] == "websocket.close":
        return first.get("code")
    await communicator.disconnect()
    return None


async def test_twenty_handshakes_of_one_script_at_once_read_its_token_once(alice, settings, key_checks, monkeypatch):
    monkeypatch.setattr(ws_auth, "TOKEN_ANSWER_MAX_AGE_S", 60.0)  # however slow the machine
    settings.WEBSOCKET_MAX_PER_USER = 20
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    _, key = await issue(alice, "alice's script")
    outcomes = await asyncio.gather(*(watch_with(key, evaluation) for _ in range(20)))
    assert outcomes == [None] * 20
    assert len(key_checks) == 1


async def test_twenty_handshakes_from_one_address_at_once_ask_the_throttle_once(alice, settings, monkeypatch):
    settings.WEBSOCKET_MAX_PER_USER = 20
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    _, key = await issue(alice, "alice's script")
    asked = []
    blocked_address = ws_auth.blocked_address

    def slow_counting(address):
        asked.append(address)
        time.sleep(0.5)  # every handshake arrives while the first one's answer is being read
        return blocked_address(address)

    monkeypatch.setattr(ws_auth, "blocked_address", slow_counting)
    outcomes = await asyncio.gather(*(watch_with(key, evaluation) for _ in range(20)))
    assert outcomes == [None] * 20
    assert len(asked) == 1


async def test_every_guess_counts_for_the_throttle_even_when_guesses_share_one_check(olivia, settings, key_checks):
    settings.SIGNIN_IP_LIMIT = (3, 300)
    _, key = await issue(olivia, "olivia's script")
    guesses = await asyncio.gather(*(feed_from("203.0.113.7", GUESS) for _ in range(3)))
    assert guesses == [CloseCode.NOT_SIGNED_IN] * 3
    # Three failures counted, however many reads of the key they shared: the address is refused now,
    # even with a real token, and the same token from elsewhere is served.
    assert await feed_from("203.0.113.7", key) == CloseCode.NOT_SIGNED_IN
    assert await feed_from("198.51.100.2", key) is None


async def test_a_refused_key_is_read_again_at_each_later_attempt(olivia, key_checks):
    for _ in range(3):
        assert await feed_from("198.51.100.2", GUESS) == CloseCode.NOT_SIGNED_IN
    assert key_checks == [GUESS] * 3


async def test_a_revoked_token_is_refused_once_the_shared_answer_is_older_than_the_bound(alice, monkeypatch):
    monkeypatch.setattr(ws_auth, "TOKEN_ANSWER_MAX_AGE_S", 0.3)
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    token, key = await issue(alice, "alice's script")
    assert await watch_with(key, evaluation) is None
    await database_sync_to_async(token.revoke)()
    await asyncio.sleep(0.3)
    assert await watch_with(key, evaluation) == CloseCode.NOT_SIGNED_IN


async def test_alices_and_bobs_tokens_checked_at_once_never_share_an_answer(alice, bob, monkeypatch):
    monkeypatch.setattr(ws_auth, "TOKEN_ANSWER_MAX_AGE_S", 60.0)
    alice_token, alice_key = await issue(alice, "alice's script")
    bob_token, bob_key = await issue(bob, "bob's script")
    answers = await asyncio.gather(*(ws_auth._token_user(key, "127.0.0.1") for key in [alice_key, bob_key] * 10))
    assert {(user.pk, token_id) for user, token_id in answers[0::2]} == {(alice.pk, alice_token.pk)}
    assert {(user.pk, token_id) for user, token_id in answers[1::2]} == {(bob.pk, bob_token.pk)}


async def test_bobs_token_on_alices_run_is_refused_while_alices_is_shared(alice, bob, settings):
    evaluation = await database_sync_to_async(make_evaluation)(alice, status=Status.RUNNING)
    _, alice_key = await issue(alice, "alice's script")
    _, bob_key = await issue(bob, "bob's script")
    outcomes = await asyncio.gather(*(watch_with(key, evaluation) for key in [alice_key, bob_key] * 5))
    assert outcomes == [None, CloseCode.NOT_FOUND] * 5
