"""The publisher: messages from the worker's thread reach the channel layer, in the order published."""

from __future__ import annotations

import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.evaluations import publisher


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
