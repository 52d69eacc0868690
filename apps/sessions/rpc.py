"""How a request reaches the session host that serves a session, and its reply comes back: Redis lists.

Not RQ: a request is JSON (never pickled: what a sandbox touches never gets near an unpickler) and
goes straight to the list its host blocks on, no queue, no job, no worker fork: one RPUSH and one
BLPOP each way. Starts go to ``STARTS``, which every host with room waits on; everything else to
the host's own list (``requests_key``). A request names a reply list; bytes too large for JSON
(a file, an exec's input or output) travel in a key of their own next to it, expiring soon.

Hosts announce themselves in the sorted set ``HOSTS`` (score: their last heartbeat).
"""

from __future__ import annotations

import json
import time
import uuid
from functools import lru_cache

import redis
from django.conf import settings

PREFIX = "crucible:sessions:"
STARTS = PREFIX + "starts"
HOSTS = PREFIX + "hosts"
BLOB_TTL_S = 300


class HostUnavailable(Exception):
    """No host answered within the time given."""


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def connection() -> redis.Redis:
    return _client(settings.REDIS_URL)


def requests_key(host: str) -> str:
    return f"{PREFIX}requests:{host}"


def reply_key(request_id: str) -> str:
    return f"{PREFIX}reply:{request_id}"


def blob_key(request_id: str, direction: str) -> str:
    return f"{PREFIX}blob:{request_id}:{direction}"


# --- hosts -----------------------------------------------------------------------------------


def beat(host: str) -> None:
    connection().zadd(HOSTS, {host: time.time()})


def forget_host(host: str) -> None:
    connection().zrem(HOSTS, host)


def live_hosts() -> set[str]:
    """Hosts whose heartbeat is younger than ``SESSION_HOST_LOST_AFTER_S``."""
    since = time.time() - settings.SESSION_HOST_LOST_AFTER_S
    return {name.decode() for name in connection().zrangebyscore(HOSTS, since, "+inf")}


def host_is_live(host: str) -> bool:
    score = connection().zscore(HOSTS, host)
    return score is not None and score >= time.time() - settings.SESSION_HOST_LOST_AFTER_S


# --- the caller's side -------------------------------------------------------------------------


def send(queue: str, message: dict, payload: bytes | None = None, *, request_id: str | None = None) -> str:
    """Put ``message`` on ``queue`` (with ``payload`` beside it); returns the request id to wait on."""
    request_id = request_id or uuid.uuid4().hex
    client = connection()
    pipe = client.pipeline(transaction=False)
    if payload is not None:
        pipe.set(blob_key(request_id, "in"), payload, ex=BLOB_TTL_S)
    pipe.rpush(queue, json.dumps({**message, "rid": request_id, "has_payload": payload is not None}))
    pipe.execute()
    return request_id


def wait_reply(request_id: str, timeout_s: float) -> tuple[dict, bytes | None]:
    """The reply to ``request_id`` (and its payload), or ``HostUnavailable`` after ``timeout_s``."""
    client = connection()
    found = client.blpop([reply_key(request_id)], timeout=max(0.01, timeout_s))
    if found is None:
        raise HostUnavailable("the session host did not answer in time")
    reply = json.loads(found[1])
    payload = client.getdel(blob_key(request_id, "out")) if reply.get("has_payload") else None
    return reply, payload


def call(host: str, message: dict, *, timeout_s: float, payload: bytes | None = None) -> tuple[dict, bytes | None]:
    """One request to ``host`` and its reply."""
    return wait_reply(send(requests_key(host), message, payload), timeout_s)


# --- the host's side ---------------------------------------------------------------------------


def receive(queues: list[str], timeout_s: float) -> tuple[dict, bytes | None] | None:
    """The next request on any of ``queues`` (and its payload), or None after ``timeout_s``."""
    client = connection()
    found = client.blpop(queues, timeout=max(0.01, timeout_s))
    if found is None:
        return None
    message = json.loads(found[1])
    payload = client.getdel(blob_key(message["rid"], "in")) if message.get("has_payload") else None
    return message, payload


def reply(request_id: str, message: dict, payload: bytes | None = None) -> None:
    client = connection()
    pipe = client.pipeline(transaction=False)
    if payload is not None:
        pipe.set(blob_key(request_id, "out"), payload, ex=BLOB_TTL_S)
    pipe.rpush(reply_key(request_id), json.dumps({**message, "has_payload": payload is not None}))
    pipe.expire(reply_key(request_id), BLOB_TTL_S)
    pipe.execute()
