"""The web server's processes borrow PostgreSQL connections from a pool (``DATABASE_POOL_MAX``).

Daphne runs each request's view on a thread of a pool, so each request opened a connection (about
9 ms of every API call) and closed it at its end. A Daphne process (``crucible/asgi.py``) now keeps
a small pool: requests borrow an open connection and give it back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.stack import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def web_backends() -> set[int]:
    """The PostgreSQL backends the web server holds on this database (named by ``application_name``)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'crucible-web' AND datname = current_database()"
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def daphne():
    """One Daphne process, as the Procfile's web tier runs it, on this test's database."""
    database_url = urlparse(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"]).geturl()
    port = free_port()
    env = {**os.environ, "CRUCIBLE_ENV": "test", "DATABASE_URL": database_url}
    env.pop("DATABASE_POOL_MAX", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "crucible.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/api/v1/health/live/", timeout=2).ok, timeout=60, what="Daphne")
        yield base
    finally:
        process.kill()
        process.wait(timeout=10)
        # Its connections end with it; the test database can then be dropped.
        wait_until(lambda: not web_backends(), timeout=10, what="the web's connections to close")


# Answered by Django's view, which reads the database (SELECT 1): a plain probe without the query
# string is answered before Django, on a connection of its own (apps/console/probes.py).
THROUGH_DJANGO = "/api/v1/health/?format=json"


def test_requests_to_the_web_server_reuse_its_open_database_connections(daphne):
    for _ in range(3):
        requests.get(f"{daphne}{THROUGH_DJANGO}", timeout=10)
    # The pool keeps at least two connections open between requests (without it: none once a
    # request ends).
    wait_until(lambda: len(web_backends()) >= 2, timeout=10, what="the pool's connections")
    held = web_backends()
    for _ in range(10):
        assert requests.get(f"{daphne}{THROUGH_DJANGO}", timeout=10).json()["checks"]["database"] == "ok"
    # Ten more requests opened no connection of their own: the same two backends serve them.
    assert web_backends() == held


def test_a_process_that_read_its_settings_before_loading_the_web_application_keeps_its_own_connections():
    """Tests (and any tool) import ``crucible.asgi`` with their settings already read: nothing changes
    for them, nor for the processes they start."""
    import crucible.asgi  # noqa: F401

    assert "pool" not in settings.DATABASES["default"]["OPTIONS"]
    assert "DATABASE_POOL_MAX" not in os.environ
