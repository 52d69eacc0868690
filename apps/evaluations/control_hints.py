"""A hint through Redis that a running evaluation's control request changed (a cancel, a stop).

The row stays the source of truth: a hint only tells the worker running the evaluation to read it
now. The worker looks for a hint every ``controller.CONTROL_POLL_S`` (a Redis GET) and reads the
row when one came, and at least every ``controller.ROW_READ_EVERY_S`` whatever the hints say (one
that was lost, a row handed to another attempt). Reading the row five times a second per running
evaluation was most of PostgreSQL's work while ten runs only slept.

A hint is a counter per evaluation, raised once per request after its row was committed; the
worker reads the row when the counter differs from the last it saw. When Redis cannot answer, the
worker reads the row at every look (as it always did), so a stop is never slower than that for it;
when a hint cannot be written, the row's next read sees the request.
"""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from crucible import redis_clients

log = logging.getLogger(__name__)

KEY = "crucible:control-hint:{}"
TTL_S = 24 * 3600  # longer than any run may last; a hint outliving its run is never read again


def announce_on_commit(evaluation_id) -> None:
    """Raise the evaluation's hint once the request on its row is committed (at once outside a transaction)."""
    transaction.on_commit(lambda: announce(evaluation_id))


def announce(evaluation_id) -> None:
    key = KEY.format(evaluation_id)
    try:
        with redis_clients.default().pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, TTL_S)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("control hint for %s not written (its worker reads the row soon anyway): %s", evaluation_id, exc)


def count(evaluation_id) -> int | None:
    """How many requests were announced for the evaluation; None when Redis cannot say."""
    try:
        value = redis_clients.default().get(KEY.format(evaluation_id))
    except redis.RedisError:
        return None
    return int(value or 0)
