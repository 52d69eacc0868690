"""channels_redis's pub/sub layer, with a process's first subscription heard at once.

channels_redis reads a Daphne process's Redis subscriptions in one task per Redis shard. While the
process has no subscription, that task sleeps 0.1 s at a time; a viewer who then subscribes (the
first of the process, or the first after the last one left: a researcher watching their one run)
hears nothing published before the sleep ends. Their run's first lines and, for a short run, its
end waited for it: about 35 ms of a trivial run's 120, measured from the worker's publish to the
consumer. Here a subscription wakes the task instead.

A process's reader also hands a group's message *directly* to the connections that asked for it
(``take_directly``) instead of queueing it for each of them. channels_redis puts a copy into every
member's queue; each connection's task then wakes, decodes its copy and runs its handler: with a
hundred viewers of a run, that was most of a web process's time per line. A direct taker is called
with the message decoded once for all of them, in the reader's own turn of the loop, and only while
that connection's queue is empty (so a message never overtakes one queued before it); it answers
whether it took the message, and what it does not take is queued as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close

log = logging.getLogger(__name__)


DirectTaker = Callable[[dict], bool]


class _PromptShard(RedisSingleShardConnection):
    def __init__(self, host, channel_layer):
        super().__init__(host, channel_layer)
        self._subscribed = asyncio.Event()

    async def subscribe(self, channel):
        await super().subscribe(channel)
        self._subscribed.set()

    async def _do_receiving(self):
        """channels_redis's loop, waiting for a subscription rather than sleeping 0.1 s at a time."""
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    self._receive_message(message)
                else:
                    self._subscribed.clear()
                    try:
                        await asyncio.wait_for(self._subscribed.wait(), 0.1)
                    except TimeoutError:
                        pass
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException:
                log.exception("Unexpected exception in receive task")
                await asyncio.sleep(1)

    def _receive_message(self, message):
        """channels_redis's, with a group's message offered first to its members' direct takers."""
        if message is None:
            return
        layer = self.channel_layer
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        members = layer.groups.get(name) if layer.direct_takers else None
        if not members or name in layer.channels:
            return super()._receive_message(message)
        data, decoded = message["data"], None
        for channel_name in list(members):
            queue = layer.channels.get(channel_name)
            if queue is None:
                continue
            taker = layer.direct_takers.get(channel_name)
            if taker is not None and queue.empty():
                if decoded is None:
                    decoded = layer.channel_layer.deserialize(data)
                try:
                    if taker(decoded):
                        continue
                except Exception:  # noqa: BLE001 (one connection's failure must not cost the others their message)
                    log.exception("a direct taker failed; its message is queued")
            queue.put_nowait(data)


class _PromptLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts=None, *args, **kwargs):
        super().__init__(hosts, *args, **kwargs)
        self._shards = [_PromptShard(shard.host, self) for shard in self._shards]
        self.direct_takers: dict[str, DirectTaker] = {}


class PromptPubSubChannelLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` whose subscriptions are heard from the moment they are made."""

    def _get_layer(self):
        """As channels_redis's, making a ``_PromptLoopLayer``: one per event loop, flushed when it closes."""
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _PromptLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

    def take_directly(self, channel: str, taker: DirectTaker) -> None:
        """From now on, offer ``channel``'s group messages to ``taker`` before queueing them (this
        event loop's layer; call from a coroutine). ``taker(message)`` must not block, must not
        change the message (it is shared) and returns True when it took it."""
        self._get_layer().direct_takers[channel] = taker

    def stop_taking_directly(self, channel: str) -> None:
        self._get_layer().direct_takers.pop(channel, None)
