"""The channel layer's direct takers (``crucible.channel_layer``), on the real Redis: a group's message
is handed to the members that take it directly, decoded once for all of them, and queued for
everyone else, behind anything queued before it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from crucible.channel_layer import PromptPubSubChannelLayer


@pytest.fixture
async def layer():
    """A layer of this test's own, as a web process has (the process's layer is shared by the tests)."""
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    assert isinstance(layer, PromptPubSubChannelLayer)
    yield layer
    await layer.flush()


class Taker:
    """A viewer's direct taker: keeps what it took; ``willing`` says whether it takes the next one."""

    def __init__(self, willing=True):
        self.willing = willing
        self.took: list[dict] = []
        self.offered = 0

    def __call__(self, message: dict) -> bool:
        self.offered += 1
        if not self.willing:
            return False
        self.took.append(message)
        return True


async def members(layer, group: str, count: int) -> list[str]:
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add(group, channel)
    return channels


async def sent_and_offered(layer, group: str, message: dict, takers: list[Taker]) -> None:
    """Send ``message`` to ``group`` and wait until every taker was offered it or it was queued."""
    before = [taker.offered for taker in takers]
    await layer.group_send(group, message)
    for _ in range(200):
        if all(taker.offered > offered for taker, offered in zip(takers, before, strict=True)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the message never reached the takers")


async def queued(layer, channel: str, count: int) -> None:
    """Wait until ``count`` messages wait in ``channel``'s queue of this process."""
    for _ in range(500):
        if layer._get_layer().channels[channel].qsize() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} messages never waited in the queue")


async def received_now(layer, channel: str, timeout: float = 2.0) -> dict:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing_queued(layer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), 0.3)
    except TimeoutError:
        return True
    return False


async def test_a_group_message_goes_to_every_direct_taker_decoded_once_and_is_not_queued(layer):
    group = f"run.{uuid.uuid4().hex}"
    viewers = await members(layer, group, 3)
    takers = [Taker() for _ in viewers]
    for channel, taker in zip(viewers, takers, strict=True):
        layer.take_directly(channel, taker)
    await sent_and_offered(layer, group, {"type": "evaluation.event", "event": {"seq": 1}}, takers)
    assert [taker.took for taker in takers] == [[{"type": "evaluation.event", "event": {"seq": 1}}]] * 3
    assert takers[0].took[0] is takers[1].took[0] is takers[2].took[0]  # decoded once, shared
    for channel in viewers:
        assert await nothing_queued(layer, channel)


async def test_a_message_a_taker_declines_is_queued_for_that_viewer_only(layer):
    group = f"run.{uuid.uuid4().hex}"
    alices, bobs = await members(layer, group, 2)
    alice, bob = Taker(), Taker(willing=False)
    layer.take_directly(alices, alice)
    layer.take_directly(bobs, bob)
    await sent_and_offered(layer, group, {"type": "evaluation.event", "event": {"seq": 1}}, [alice, bob])
    assert len(alice.took) == 1 and bob.took == []
    assert (await received_now(layer, bobs))["event"] == {"seq": 1}
    assert await nothing_queued(layer, alices)


async def test_a_message_is_queued_behind_one_already_queued_and_the_taker_is_not_asked(layer):
    group = f"run.{uuid.uuid4().hex}"
    [viewer] = await members(layer, group, 1)
    taker = Taker(willing=False)
    layer.take_directly(viewer, taker)
    await sent_and_offered(layer, group, {"type": "evaluation.event", "event": {"seq": 1}}, [taker])
    taker.willing = True
    await layer.group_send(group, {"type": "evaluation.event", "event": {"seq": 2}})
    await queued(layer, viewer, 2)  # the reader had it while the first still waited in the queue
    assert (await received_now(layer, viewer))["event"] == {"seq": 1}
    assert (await received_now(layer, viewer))["event"] == {"seq": 2}  # never overtook the first
    assert taker.offered == 1 and taker.took == []


async def test_a_taker_that_fails_gets_the_message_queued_and_the_others_still_take_theirs(layer):
    group = f"run.{uuid.uuid4().hex}"
    broken_viewer, alices = await members(layer, group, 2)

    def broken(message):
        raise RuntimeError("a bug in one connection")

    alice = Taker()
    layer.take_directly(broken_viewer, broken)
    layer.take_directly(alices, alice)
    await sent_and_offered(layer, group, {"type": "evaluation.event", "event": {"seq": 1}}, [alice])
    assert len(alice.took) == 1
    assert (await received_now(layer, broken_viewer))["event"] == {"seq": 1}


async def test_after_a_viewer_stops_taking_directly_its_messages_are_queued(layer):
    group = f"run.{uuid.uuid4().hex}"
    [viewer] = await members(layer, group, 1)
    taker = Taker()
    layer.take_directly(viewer, taker)
    layer.stop_taking_directly(viewer)
    await layer.group_send(group, {"type": "evaluation.event", "event": {"seq": 1}})
    assert (await received_now(layer, viewer))["event"] == {"seq": 1}
    assert taker.offered == 0


async def test_messages_to_a_viewers_own_channel_are_never_offered(layer):
    [viewer] = await members(layer, f"run.{uuid.uuid4().hex}", 1)
    taker = Taker()
    layer.take_directly(viewer, taker)
    await layer.send(viewer, {"type": "evaluation.event", "event": {"seq": 1}})
    assert (await received_now(layer, viewer))["event"] == {"seq": 1}
    assert taker.offered == 0


async def test_a_message_sent_from_sync_code_reaches_the_group_in_order_without_an_event_loop(layer, monkeypatch):
    """A worker's publish is a PUBLISH in its own thread: nothing is handed to the publishing loop."""
    from crucible import publishing

    def no_loop(coroutine):
        coroutine.close()
        raise AssertionError("a publish went through the publishing loop")

    monkeypatch.setattr(publishing.publishing, "run", no_loop)
    group = f"sync-{uuid.uuid4().hex}"
    (viewer,) = await members(layer, group, 1)
    sender = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)  # the worker's layer, in another "process"

    def worker_sends():
        for n in range(100):
            publishing.group_send(sender, group, {"type": "test.message", "n": n})

    await asyncio.to_thread(worker_sends)
    received = [await asyncio.wait_for(layer.receive(viewer), timeout=5) for _ in range(100)]
    assert [m["n"] for m in received] == list(range(100))


def test_a_sync_publish_to_a_redis_that_refuses_fails_at_once():
    """No backoff between attempts: a worker's run is not held while Redis is away."""
    import socket
    import time

    import redis

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    layer = PromptPubSubChannelLayer(hosts=[{"address": f"redis://127.0.0.1:{port}/0"}], prefix="asgi.test.")
    began = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        layer.group_send_blocking("nobody", {"type": "test.message"}, timeout_s=2.0)
    assert time.monotonic() - began < 1.0
