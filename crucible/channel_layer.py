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

Sync code (a worker's publisher) sends to a group with ``group_send_blocking``: the PUBLISH
``group_send`` makes (same channel name, shard and serialization), on a blocking Redis client of the
process, instead of a coroutine handed to an event loop in another thread and waited for. That hop
cost a worker about 0.32 ms of CPU a message (0.09 ms now), half a dozen messages per batch sample.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import redis
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _consistent_hash, _wrap_close, decode_hosts
from redis.backoff import NoBackoff
from redis.retry import Retry

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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Set here: an attribute the instance lacks is looked up on the current event loop's layer.
        self._blocking: list[redis.Redis] | None = None
        self._blocking_lock = threading.Lock()

    def _get_layer(self):
        """As channels_redis's, making a ``_PromptLoopLayer``: one per event loop, flushed when it closes."""
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _PromptLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

    def group_send_blocking(self, group: str, message: dict, *, timeout_s: float) -> None:
        """``group_send`` from sync code, in this thread: one PUBLISH on a blocking client of this
        process (a connection pool per shard, thread-safe, replaced in a forked child by redis-py).
        Fails within about ``timeout_s`` when Redis does not answer (a refused connection at once, one
        new connection tried after a dropped one: no backoff that would hold a worker's run)."""
        name = self._group_channel_name(group)
        clients = self._blocking_clients(timeout_s)
        clients[_consistent_hash(name, len(clients))].publish(name, self.serialize(message))

    def _group_channel_name(self, group: str) -> str:
        """The Redis channel of ``group``: ``RedisPubSubLoopLayer._get_group_channel_name``'s."""
        return f"{self._kwargs.get('prefix', 'asgi')}__group__{group}"

    def _blocking_clients(self, timeout_s: float) -> list[redis.Redis]:
        if self._blocking is None:  # the lock only while the clients are made (redis-py's pools survive a fork)
            with self._blocking_lock:
                if self._blocking is None:
                    self._blocking = [_blocking_client(host, timeout_s) for host in decode_hosts(self._hosts())]
        return self._blocking

    def _hosts(self):
        return self._kwargs["hosts"] if "hosts" in self._kwargs else (self._args[0] if self._args else None)

    def take_directly(self, channel: str, taker: DirectTaker) -> None:
        """From now on, offer ``channel``'s group messages to ``taker`` before queueing them (this
        event loop's layer; call from a coroutine). ``taker(message)`` must not block, must not
        change the message (it is shared) and returns True when it took it."""
        self._get_layer().direct_takers[channel] = taker

    def stop_taking_directly(self, channel: str) -> None:
        self._get_layer().direct_takers.pop(channel, None)


def _blocking_client(host: dict, timeout_s: float) -> redis.Redis:
    """A blocking client of one shard of the layer's ``hosts`` (an ``address`` URL, or ``host`` and
    ``port``, with redis-py's options), whose commands give up after ``timeout_s``."""
    options = dict(host, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 1))
    options.setdefault("socket_connect_timeout", timeout_s)
    if "master_name" in options:
        raise ValueError("the pub/sub layer's blocking publish does not support Sentinel hosts")
    address = options.pop("address", None)
    pool = redis.ConnectionPool.from_url(address, **options) if address else redis.ConnectionPool(**options)
    return redis.Redis(connection_pool=pool)
