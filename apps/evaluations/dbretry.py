"""Waiting out a PostgreSQL outage in a worker, instead of losing the run's record.

A restart of the database cuts every connection; the worker's next query fails with an
``OperationalError`` or ``InterfaceError``. Those are the only errors retried here: anything else
is a bug or a refusal that a retry would repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
DB_RETRY_PAUSE_S = 0.5


def forget_connection() -> None:
    """Drop this thread's database connection after an error; the next query opens a new one."""
    try:
        connection.close()
    except Exception:  # noqa: S110 (the connection is already broken)
        pass


def with_db_retry(fn: Callable, what: str, budget_s: float | None = None):
    """Call ``fn`` until it gets through a PostgreSQL outage, for at most ``WORKER_DB_RETRY_S``."""
    deadline = time.monotonic() + (settings.WORKER_DB_RETRY_S if budget_s is None else budget_s)
    while True:
        try:
            return fn()
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unavailable while %s (%s); retrying", what, exc)
            forget_connection()
            time.sleep(DB_RETRY_PAUSE_S)
