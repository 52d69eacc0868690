"""How many WebSockets one user holds open at once, counted in Redis across every Daphne process.

Each open connection holds a *slot*: a member of the user's sorted set, scored with the time (Redis
server time, in ms) at which its lease runs out. ``acquire`` first drops the user's expired leases,
then takes a slot only while fewer than ``WEBSOCKET_MAX_PER_USER`` are held, in one Lua script so
two processes can never both take the last one. A connection renews its lease every heartbeat
(``WEBSOCKET_HEARTBEAT_S``) and gives the slot back when it ends; a Daphne process that dies
without saying goodbye leaves leases that run out after ``LEASE_HEARTBEATS`` missed heartbeats,
so a crash never locks a user out for longer than that.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings
from redis import asyncio as aioredis

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


async def held(user_id: int) -> int:
    """How many unexpired slots the user holds now (for tests and the operators)."""
    client = _client()
    seconds, micros = await client.time()
    return await client.zcount(user_key(user_id), seconds * 1000 + micros // 1000 + 1, "+inf")
