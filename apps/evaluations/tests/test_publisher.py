"""The publisher: messages from the worker's thread reach the channel layer, in the order published."""

from __future__ import annotations

import asyncio
import os
import uuid

from asgiref.sync import sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from apps.evaluations import publisher


def get_channel_layer():
    """A layer of this test's own to receive on (the publisher sends through the process's layer).

    The process's layer is shared by every test an xdist worker runs, each on its own event loop;
    a receive another test left cancelled can leave its per-process receive lock bound to that
    test's loop. A viewer in another process has its own layer, which is what this is."""
    return channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)


async def test_chunks_published_one_after_another_reach_the_group_in_order():
    layer = get_channel_layer()
    evaluation_id = uuid.uuid4()
    viewer = await layer.new_channel()
    await layer.group_add(publisher.group_name(evaluation_id), viewer)

    def worker_writes():
        for seq in range(1, 51):
            publisher.publish_log(evaluation_id, seq, "stdout", f"line {seq}\n")
        publisher.publish_stored(evaluation_id, 50)

    await sync_to_async(worker_writes, thread_sensitive=False)()
    received = [await layer.receive(viewer) for _ in range(51)]
    assert [m["event"]["seq"] for m in received[:50]] == list(range(1, 51))
    assert received[50] == {"type": "evaluation.stored", "seq": 50}
    await layer.group_discard(publisher.group_name(evaluation_id), viewer)


async def test_a_forked_work_horse_publishes_on_its_own_loop():
    """RQ forks a work horse per job; the parent's publishing thread does not survive the fork."""
    layer = get_channel_layer()
    evaluation_id = uuid.uuid4()
    viewer = await layer.new_channel()
    await layer.group_add(publisher.group_name(evaluation_id), viewer)

    def fork_a_horse_that_publishes() -> int:
        publisher.publish_log(evaluation_id, 1, "stdout", "from the worker\n")  # the parent's loop runs
        pid = os.fork()
        if pid == 0:  # the horse
            try:
                publisher.publish_log(evaluation_id, 2, "stdout", "from the horse\n")
            finally:
                os._exit(0)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert await sync_to_async(fork_a_horse_that_publishes, thread_sensitive=False)() == 0
    received = [await asyncio.wait_for(layer.receive(viewer), timeout=10) for _ in range(2)]
    assert [m["event"]["data"] for m in received] == ["from the worker\n", "from the horse\n"]
    await layer.group_discard(publisher.group_name(evaluation_id), viewer)


def test_a_publish_redis_refuses_is_logged_and_the_run_goes_on(monkeypatch, caplog):
    """Live delivery is best effort: the worker's publish does not raise when Redis is away."""
    import socket

    from crucible.channel_layer import PromptPubSubChannelLayer

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    away = PromptPubSubChannelLayer(hosts=[{"address": f"redis://127.0.0.1:{port}/0"}], prefix="asgi.test.")
    monkeypatch.setattr(publisher, "get_channel_layer", lambda: away)
    publisher.publish_log(uuid.uuid4(), 1, "stdout", "a line nobody sees live\n")
    assert "could not publish log" in caplog.text
