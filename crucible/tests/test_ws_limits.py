"""One user's WebSockets are limited; another user's stream never suffers for them.

Slots are counted in Redis (``crucible.ws_limits``), so every Daphne process sees the same count
(tests/test_ws_live.py checks it across two real Daphne processes). Here the limit is 3 and the
streams run in-process on the real channel layer and test database.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.db import connections
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.evaluations import publisher
from apps.evaluations.models import Evaluation, OutputChunk, Status
from apps.evaluations.tests.factories import make_evaluation
from crucible import ws_limits
from crucible.tests.ws import close_code, open_socket
from tests.stack import free_port

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 3


@pytest.fixture(autouse=True)
def limits(settings):
    settings.WEBSOCKET_MAX_PER_USER = LIMIT
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter(f"{ws_limits.KEY_PREFIX}*"):
        client.delete(key)
    yield
    client.close()


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database thread keeps its connection; close it so the test database can go."""
    yield
    await database_sync_to_async(connections.close_all)()


async def watch(user, evaluation):
    """``user``'s browser opens the evaluation's stream; returns it once its first status arrived."""
    communicator, connected = await open_socket(f"/ws/evaluations/{evaluation.pk}/", user=user)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    return communicator


async def refused_with(user, evaluation) -> int:
    communicator, connected = await open_socket(f"/ws/evaluations/{evaluation.pk}/", user=user)
    assert connected  # accepted, then closed, so the client reads why
    return await close_code(communicator)


@database_sync_to_async
def running(owner):
    return make_evaluation(owner, status=Status.RUNNING)


@database_sync_to_async
def store_and_publish(evaluation, seq):
    """What the worker's recorder does: store the chunk, then publish it."""
    chunk = OutputChunk.objects.create(evaluation=evaluation, seq=seq, stream="stdout", data=f"line {seq}\n".encode())
    publisher.publish_log(evaluation.pk, chunk.seq, chunk.stream, chunk.text)


@database_sync_to_async
def finish(evaluation, *, publish: bool):
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Status.SUCCEEDED, exit_code=0, reason="exit", finished_at=timezone.now()
    )
    evaluation.refresh_from_db()
    if publish:
        publisher.publish_end(evaluation)


async def read_until_end(communicator) -> tuple[list[int], dict]:
    seqs = []
    while True:
        message = await communicator.receive_json_from(timeout=10)
        if message["type"] == "log":
            seqs.append(message["seq"])
        elif message["type"] == "end":
            return seqs, message


async def test_one_connection_over_the_limit_is_closed_with_4429(alice):
    evaluation = await running(alice)
    held = [await watch(alice, evaluation) for _ in range(LIMIT)]
    assert await refused_with(alice, evaluation) == 4429
    assert await ws_limits.held(alice.pk) == LIMIT
    for communicator in held:
        await communicator.disconnect()


async def test_the_limit_counts_every_stream_of_the_user(olivia):
    """An operator's alert feed and the evaluations she watches share her slots."""
    evaluation = await running(olivia)
    feed, connected = await open_socket("/ws/alerts/", user=olivia)
    assert connected
    held = [feed] + [await watch(olivia, evaluation) for _ in range(LIMIT - 1)]
    feed_again, _ = await open_socket("/ws/alerts/", user=olivia)
    assert await close_code(feed_again) == 4429
    for communicator in held:
        await communicator.disconnect()


async def test_a_closed_connection_gives_its_slot_back(alice):
    evaluation = await running(alice)
    held = [await watch(alice, evaluation) for _ in range(LIMIT)]
    await held.pop().disconnect()
    held.append(await watch(alice, evaluation))
    for communicator in held:
        await communicator.disconnect()
    assert await ws_limits.held(alice.pk) == 0


async def test_viewers_leaving_make_no_hop_to_the_thread_djangos_views_run_on(alice, monkeypatch):
    """Channels' disconnect would ``aclose_old_connections`` on Django's one sync thread: a thousand
    viewers leaving at once held the health endpoint's answer up behind a thousand such hops."""
    hops = []

    async def counted():
        hops.append(1)

    monkeypatch.setattr("channels.generic.websocket.aclose_old_connections", counted)
    monkeypatch.setattr("channels.consumer.aclose_old_connections", counted)
    evaluation = await running(alice)
    held = [await watch(alice, evaluation) for _ in range(LIMIT)]
    for communicator in held:
        await communicator.disconnect()
    assert hops == []
    assert await ws_limits.held(alice.pk) == 0  # and each left its group and gave its slot back


async def test_a_finished_stream_gives_its_slot_back_at_once(alice):
    evaluation = await running(alice)
    held = [await watch(alice, evaluation) for _ in range(LIMIT)]
    await finish(evaluation, publish=True)
    for communicator in held:
        assert await close_code(communicator) == 1000
    assert await ws_limits.held(alice.pk) == 0


async def test_refused_anonymous_and_forbidden_clients_hold_no_slot(alice, bob):
    evaluation = await running(alice)
    for _ in range(LIMIT + 1):
        assert await refused_with(bob, evaluation) == 4404
    assert await ws_limits.held(bob.pk) == 0
    communicator, _ = await open_socket(f"/ws/evaluations/{evaluation.pk}/")
    assert await close_code(communicator) == 4401


async def test_bobs_stream_gets_every_line_and_its_end_while_alice_holds_more_than_her_limit(alice, bob):
    alices = await running(alice)
    held = [await watch(alice, alices) for _ in range(LIMIT)]
    for _ in range(5):
        assert await refused_with(alice, alices) == 4429
    bobs = await running(bob)
    bob_watching = await watch(bob, bobs)
    # Alice's run is busy while bob's prints a little and ends.
    for seq in range(1, 201):
        await store_and_publish(alices, seq)
        if seq % 20 == 0:
            await store_and_publish(bobs, seq // 20)
    await finish(bobs, publish=True)
    seqs, end = await read_until_end(bob_watching)
    assert seqs == list(range(1, 11))
    assert end == {"type": "end", "status": "succeeded", "exit_code": 0, "reason": "exit"}
    assert await close_code(bob_watching) == 1000
    for communicator in held:
        await communicator.disconnect()


async def test_an_end_the_channel_layer_lost_arrives_at_the_next_heartbeat(bob, settings):
    settings.WEBSOCKET_HEARTBEAT_S = 0.5
    bobs = await running(bob)
    bob_watching = await watch(bob, bobs)
    await database_sync_to_async(OutputChunk.objects.create)(evaluation=bobs, seq=1, stream="stdout", data=b"lost\n")
    await finish(bobs, publish=False)  # neither the chunk nor the end was published
    seqs, end = await read_until_end(bob_watching)
    assert seqs == [1]
    assert end["status"] == "succeeded"
    assert await close_code(bob_watching) == 1000


async def test_a_live_connection_keeps_its_slot_past_its_first_lease(alice, settings):
    settings.WEBSOCKET_HEARTBEAT_S = 0.2  # a lease of 0.6 s, renewed every 0.2 s
    evaluation = await running(alice)
    held = [await watch(alice, evaluation) for _ in range(LIMIT)]
    await asyncio.sleep(1.5)
    assert await refused_with(alice, evaluation) == 4429
    for communicator in held:
        await communicator.disconnect()


async def test_slots_of_a_daphne_that_died_are_free_after_their_lease(alice, settings):
    """A process killed without a goodbye never gives its slots back; their leases run out."""
    settings.WEBSOCKET_HEARTBEAT_S = 0.2
    for n in range(LIMIT):
        assert await ws_limits.acquire(alice.pk, f"specific.dead-process!{n}")
    evaluation = await running(alice)
    assert await refused_with(alice, evaluation) == 4429
    await asyncio.sleep(ws_limits.lease_ms() / 1000 + 0.2)
    communicator = await watch(alice, evaluation)
    await communicator.disconnect()


async def test_bob_is_not_limited_by_alices_slots(alice, bob):
    alices = await running(alice)
    held = [await watch(alice, alices) for _ in range(LIMIT)]
    bobs = await running(bob)
    bobs_streams = [await watch(bob, bobs) for _ in range(LIMIT)]
    for communicator in held + bobs_streams:
        await communicator.disconnect()


async def test_a_revoked_token_closes_an_idle_stream_at_the_next_heartbeat(alice, settings):
    settings.WEBSOCKET_HEARTBEAT_S = 0.5
    evaluation = await running(alice)
    token, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator, _ = await open_socket(f"/ws/evaluations/{evaluation.pk}/", token=key, origin=None)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await database_sync_to_async(token.revoke)()
    assert await close_code(communicator) == 4401
    assert await ws_limits.held(alice.pk) == 0


async def test_when_redis_cannot_count_connections_the_stream_closes_with_4503(alice, settings):
    """Fail closed: without a count there is no connection (Redis here is a port nobody listens on)."""
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    evaluation = await running(alice)
    assert await refused_with(alice, evaluation) == 4503


async def test_a_storm_of_a_thousand_connections_is_counted_without_refusing_any(settings):
    """A thousand viewers opening at once: every slot is counted, none fails for want of a Redis
    connection (redis-py's plain pool raised "Too many connections" past 100 at once)."""
    settings.WEBSOCKET_MAX_PER_USER = 1000
    results = await asyncio.gather(*(ws_limits.acquire(424242, f"storm!{n}") for n in range(1000)))
    assert all(results)
    assert await ws_limits.held(424242) == 1000
    await asyncio.gather(*(ws_limits.release(424242, f"storm!{n}") for n in range(1000)))


async def test_a_process_renews_all_its_slots_in_one_redis_call_per_heartbeat(alice, bob, settings, monkeypatch):
    settings.WEBSOCKET_HEARTBEAT_S = 0.2
    renewals = []
    renew = ws_limits.renew

    async def counting(slots):
        renewals.append(dict(slots))
        return await renew(slots)

    monkeypatch.setattr(ws_limits, "renew", counting)
    alices, bobs = await running(alice), await running(bob)
    held = [await watch(alice, alices) for _ in range(LIMIT)] + [await watch(bob, bobs) for _ in range(LIMIT)]
    renewals.clear()
    await asyncio.sleep(1.1)
    assert 3 <= len(renewals) <= 7  # about one a heartbeat, not one per connection
    assert all(len(slots) == 2 * LIMIT for slots in renewals)
    assert await refused_with(alice, alices) == 4429  # every slot is still held past its first lease
    for communicator in held:
        await communicator.disconnect()
    assert await ws_limits.held(alice.pk) == 0
    assert await ws_limits.held(bob.pk) == 0


async def test_slots_given_back_together_go_to_redis_in_one_call(alice, bob, settings, monkeypatch):
    """A run's viewers end together: their slots are given back in one round trip, and each waits for its own."""
    settings.WEBSOCKET_MAX_PER_USER = 50
    renewals, calls = ws_limits.Renewals(), []
    release_many = ws_limits.release_many

    async def counting(slots):
        calls.append(dict(slots))
        return await release_many(slots)

    monkeypatch.setattr(ws_limits, "release_many", counting)
    slots = [(alice.pk, f"specific.ending!{n}") for n in range(50)] + [(bob.pk, "specific.ending!bob")]
    for user_id, slot in slots:
        assert await ws_limits.acquire(user_id, slot)
        renewals.hold(user_id, slot, lambda: None)
    await asyncio.gather(*(renewals.release(user_id, slot) for user_id, slot in slots))
    assert len(calls) == 1 and len(calls[0]) == 51
    assert await ws_limits.held(alice.pk) == 0 and await ws_limits.held(bob.pk) == 0


async def test_every_connection_giving_a_slot_back_hears_that_redis_failed(alice, monkeypatch):
    renewals = ws_limits.Renewals()

    async def failing(slots):
        raise redis.RedisError("Redis went away")

    monkeypatch.setattr(ws_limits, "release_many", failing)
    outcomes = await asyncio.gather(
        *(renewals.release(alice.pk, f"specific.failing!{n}") for n in range(3)), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [redis.RedisError] * 3


async def test_slots_a_process_stopped_renewing_expire_and_its_stalled_renewal_cannot_exceed_the_limit(alice, settings):
    """Process A holds alice's three slots and stalls past their lease; process B takes them; A's late
    renewal loses every one (each of A's connections is told) and alice never holds more than three."""
    settings.WEBSOCKET_HEARTBEAT_S = 0.2
    process_a, lost = ws_limits.Renewals(), []
    for n in range(LIMIT):
        assert await ws_limits.acquire(alice.pk, f"specific.process-a!{n}")
        process_a.hold(alice.pk, f"specific.process-a!{n}", lambda n=n: lost.append(n))
    process_a._task.cancel()  # stalled: no renewal
    await asyncio.sleep(ws_limits.lease_ms() / 1000 + 0.2)
    assert await ws_limits.held(alice.pk) == 0
    for n in range(LIMIT):
        assert await ws_limits.acquire(alice.pk, f"specific.process-b!{n}")
    await process_a.renew_now()
    assert sorted(lost) == list(range(LIMIT))
    assert await ws_limits.held(alice.pk) == LIMIT


async def test_a_slot_given_back_during_a_renewal_stays_given_back(alice, monkeypatch):
    renewals, started, go_on = ws_limits.Renewals(), asyncio.Event(), asyncio.Event()
    renew = ws_limits.renew

    async def slow(slots):
        started.set()
        await go_on.wait()
        return await renew(slots)

    monkeypatch.setattr(ws_limits, "renew", slow)
    assert await ws_limits.acquire(alice.pk, "specific.closing!1")
    renewals.hold(alice.pk, "specific.closing!1", lambda: None)
    renewing = asyncio.ensure_future(renewals.renew_now())
    await started.wait()
    await renewals.release(alice.pk, "specific.closing!1")  # the connection ends meanwhile
    go_on.set()
    await renewing
    assert await ws_limits.held(alice.pk) == 0
