"""How many WebSockets one user holds open at once, counted in Redis across every Daphne process.

Each open connection holds a *slot*: a member of the user's sorted set, scored with the time (Redis
server time, in ms) at which its lease runs out. ``acquire`` first drops the user's expired leases,
then takes a slot only while fewer than ``WEBSOCKET_MAX_PER_USER`` are held, in one Lua script so
two processes can never both take the last one. Every heartbeat (``WEBSOCKET_HEARTBEAT_S``) a
process renews the leases of all its connections in one script (``Renewals``; a thousand viewers
are one Redis call, not a thousand), with the same rule: a lease that ran out while the process
stalled is taken again only if the user's limit still allows it, else that connection is told it
lost its slot. A connection gives its slot back when it ends; a Daphne process that dies without
saying goodbye leaves leases that run out after ``LEASE_HEARTBEATS`` missed heartbeats, so a crash
never locks a user out for longer than that.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from django.conf import settings
from redis import asyncio as aioredis

log = logging.getLogger(__name__)

# A lease outlives this many heartbeats, so one slow renewal never frees a live connection's slot.
LEASE_HEARTBEATS = 3
REDIS_TIMEOUT_S = 5.0
REDIS_CONNECTIONS = 32  # per Daphne process (its event loop); more callers wait for one
KEY_PREFIX = "crucible:ws:user:"

# KEYS[1] the user's set; ARGV: the slot, the lease in ms, the limit. 1 if the slot is held after.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
    return 1
end
return 0
"""

# KEYS: the users' sets; ARGV[1] the lease in ms, ARGV[2] the limit, then pairs: the index (in KEYS)
# of a slot's set, the slot. Renews each slot as _ACQUIRE would, in order; returns the slots not held.
_RENEW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
end
local lost = {}
for i = 3, #ARGV, 2 do
    local key, slot = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
    if redis.call('ZSCORE', key, slot) or redis.call('ZCARD', key) < limit then
        redis.call('ZADD', key, now_ms + lease, slot)
    else
        lost[#lost + 1] = slot
    end
end
for _, key in ipairs(KEYS) do
    redis.call('PEXPIRE', key, lease)
end
return lost
"""

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def _client() -> aioredis.Redis:
    """A Redis client for the running event loop (a client's connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A storm of connections (a thousand viewers opening at once) waits for one of the pool's
        # connections rather than failing: redis-py's plain pool raises "Too many connections" past
        # its maximum, which closed those WebSockets with 4503.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=REDIS_CONNECTIONS,
            timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client


def lease_ms() -> int:
    return int(settings.WEBSOCKET_HEARTBEAT_S * LEASE_HEARTBEATS * 1000)


def user_key(user_id: int) -> str:
    return f"{KEY_PREFIX}{user_id}"


async def acquire(user_id: int, slot: str) -> bool:
    """Take (or renew) ``slot`` among the user's connections; False when the user already holds the maximum."""
    held = await _client().eval(_ACQUIRE, 1, user_key(user_id), slot, lease_ms(), settings.WEBSOCKET_MAX_PER_USER)
    return bool(held)


async def release(user_id: int, slot: str) -> None:
    """Give the slot back (the connection ended)."""
    await _client().zrem(user_key(user_id), slot)


async def release_many(slots: dict[str, int]) -> None:
    """Give back every slot of ``slots`` (slot -> its user) in one round trip."""
    by_key: dict[str, list[str]] = {}
    for slot, user_id in slots.items():
        by_key.setdefault(user_key(user_id), []).append(slot)
    async with _client().pipeline(transaction=False) as pipe:
        for key, members in by_key.items():
            pipe.zrem(key, *members)
        await pipe.execute()


class _GivingBack:
    """Slots given back during one turn of the event loop go to Redis together (``release_many``).

    When a run ends, its hundred viewers end together: one ``ZREM`` each was a tenth of a web
    process's work then, and the burst opened new Redis connections. Each caller still waits until
    its own slot is given back (or the call failed)."""

    def __init__(self):
        self._pending: dict[str, int] = {}
        self._sent: asyncio.Future | None = None

    async def give_back(self, user_id: int, slot: str) -> None:
        self._pending[slot] = user_id
        if self._sent is None:
            self._sent = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._send)
        await asyncio.shield(self._sent)

    def _send(self) -> None:
        pending, sent = self._pending, self._sent
        self._pending, self._sent = {}, None
        task = asyncio.ensure_future(release_many(pending))

        def tell(done: asyncio.Task) -> None:
            if sent.done():
                return
            if done.cancelled():
                sent.cancel()
            elif done.exception() is not None:
                sent.set_exception(done.exception())
            else:
                sent.set_result(None)

        task.add_done_callback(tell)


async def held(user_id: int) -> int:
    """How many unexpired slots the user holds now (for tests and the operators)."""
    client = _client()
    seconds, micros = await client.time()
    return await client.zcount(user_key(user_id), seconds * 1000 + micros // 1000 + 1, "+inf")


async def renew(slots: dict[str, int]) -> set[str]:
    """Renew every slot of ``slots`` (slot -> its user) in one script; the slots no longer held."""
    keys = sorted({user_key(user_id) for user_id in slots.values()})
    index = {key: number for number, key in enumerate(keys, start=1)}
    pairs = [value for slot, user_id in slots.items() for value in (index[user_key(user_id)], slot)]
    lost = await _client().eval(_RENEW, len(keys), *keys, lease_ms(), settings.WEBSOCKET_MAX_PER_USER, *pairs)
    return {slot.decode() if isinstance(slot, bytes) else slot for slot in lost}


class Renewals:
    """The slots a process's connections hold, renewed together every heartbeat by one task.

    ``hold`` a slot once ``acquire`` took it, with what to call if its lease is lost (another
    connection of the user took it while this process stalled); ``release`` gives it back. The task
    runs while the process holds slots. A slot given back while a renewal is on its way to Redis is
    removed again after it, so a renewal never brings a closed connection's slot back.
    """

    def __init__(self):
        self._slots: dict[str, tuple[int, Callable[[], None]]] = {}
        self._task: asyncio.Task | None = None
        self._renewing = False
        self._giving_back = _GivingBack()

    def hold(self, user_id: int, slot: str, on_lost: Callable[[], None]) -> None:
        self._slots[slot] = (user_id, on_lost)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def release(self, user_id: int, slot: str) -> None:
        """Forget the slot and give it back (the connection ended)."""
        self._slots.pop(slot, None)
        if not self._slots and not self._renewing and self._task is not None:
            self._task.cancel()  # asleep: nothing to renew (a renewal on its way ends by itself)
        await self._giving_back.give_back(user_id, slot)

    async def _run(self) -> None:
        while self._slots:
            await asyncio.sleep(settings.WEBSOCKET_HEARTBEAT_S)
            try:
                await self.renew_now()
            except Exception:  # noqa: BLE001 (a lease lasts a few heartbeats: the next renewal retries)
                log.warning("could not renew the WebSocket slots", exc_info=True)

    async def renew_now(self) -> None:
        """One renewal of every held slot; tell the connections whose slot was lost."""
        slots = {slot: user_id for slot, (user_id, _) in self._slots.items()}
        if not slots:
            return
        self._renewing = True
        try:
            lost = await renew(slots)
        finally:
            self._renewing = False
            # Given back while the renewal was on its way: the renewal may have taken it again.
            again = {slot: user_id for slot, user_id in slots.items() if slot not in self._slots}
            if again:
                await release_many(again)
        for slot in lost:
            held = self._slots.pop(slot, None)
            if held is not None:
                held[1]()


_renewals: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Renewals] = weakref.WeakKeyDictionary()


def renewals() -> Renewals:
    """The running event loop's (the Daphne process's) renewals."""
    loop = asyncio.get_running_loop()
    found = _renewals.get(loop)
    if found is None:
        found = _renewals[loop] = Renewals()
    return found
