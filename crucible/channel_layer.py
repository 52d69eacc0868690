"""channels_redis's pub/sub layer, with a process's first subscription heard at once.

channels_redis reads a Daphne process's Redis subscriptions in one task per Redis shard. While the
process has no subscription, that task sleeps 0.1 s at a time; a viewer who then subscribes (the
first of the process, or the first after the last one left: a researcher watching their one run)
hears nothing published before the sleep ends. Their run's first lines and, for a short run, its
end waited for it: about 35 ms of a trivial run's 120, measured from the worker's publish to the
consumer. Here a subscription wakes the task instead.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close

log = logging.getLogger(__name__)


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


class _PromptLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts=None, *args, **kwargs):
        super().__init__(hosts, *args, **kwargs)
        self._shards = [_PromptShard(shard.host, self) for shard in self._shards]


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
