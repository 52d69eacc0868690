"""The consumers' database threads (``crucible.ws_db``) keep their PostgreSQL connections between
calls, replace one PostgreSQL dropped, and close them when idle or told to."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import connection, connections

from crucible import ws_db
from tests.stack import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@ws_db.pooled_db
def backend_pid() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def backends() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {row[0] for row in cursor.fetchall()}


@database_sync_to_async
def is_open(pid: int) -> bool:
    return pid in backends()


@database_sync_to_async
def terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


@database_sync_to_async
def gone(pid: int) -> None:
    wait_until(lambda: pid not in backends(), timeout=10, what=f"backend {pid} to go")


async def test_one_viewer_after_another_is_served_on_the_same_connection():
    first = await backend_pid()
    assert await backend_pid() == first


async def test_a_connection_postgresql_dropped_is_replaced_on_the_next_call():
    kept = await backend_pid()
    await terminate(kept)
    await gone(kept)
    replaced = await backend_pid()
    assert replaced != kept


async def test_closing_the_kept_connections_ends_their_backends():
    kept = await backend_pid()
    assert await is_open(kept)
    ws_db.close_kept_connections()
    await gone(kept)
    assert await backend_pid() != kept  # and the next call opens a new one


def test_an_idle_thread_closes_its_connection_and_opens_a_new_one_when_work_comes():
    executor = ws_db.KeptConnectionsExecutor(threads=1, idle_s=0.2)
    kept = executor.submit(backend_pid.func).result(timeout=10)
    assert kept in backends()
    wait_until(lambda: kept not in backends(), timeout=10, what="the idle thread to close its connection")
    thread = next(iter(executor._threads))
    assert executor.submit(backend_pid.func).result(timeout=10) != kept  # a new connection
    assert executor._threads == {thread}  # on the same thread: none is started again
    executor.shutdown()


def test_no_more_threads_than_allowed_serve_a_burst():
    executor = ws_db.KeptConnectionsExecutor(threads=2)
    pids = {future.result(timeout=30) for future in [executor.submit(backend_pid.func) for _ in range(50)]}
    executor.shutdown()
    assert 1 <= len(pids) <= 2
