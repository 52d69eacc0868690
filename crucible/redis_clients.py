"""Redis clients kept for the life of a process, one per URL.

``django_rq.get_connection`` and ``django_rq.get_queue`` build a new client, with a new connection
pool, at every call: every enqueue and every kill-switch look opened (and later dropped) a TCP
connection to Redis, about 2 ms each on a run's path. A client here keeps its pool's connections
(redis-py's pool is thread-safe and starts afresh in a forked child).
"""

from __future__ import annotations

from functools import lru_cache

import django_rq
import redis
from django.conf import settings
from rq import Queue


@lru_cache(maxsize=8)
def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def default() -> redis.Redis:
    """The client for ``REDIS_URL`` (quotas, throttles)."""
    return client(settings.REDIS_URL)


def rq_connection(queue_name: str = "default") -> redis.Redis:
    """The client for RQ queue ``queue_name``'s Redis (``RQ_QUEUES``)."""
    return client(settings.RQ_QUEUES[queue_name]["URL"])


def rq_queue(queue_name: str) -> Queue:
    """RQ queue ``queue_name`` on its kept client."""
    return django_rq.get_queue(queue_name, connection=rq_connection(queue_name))
