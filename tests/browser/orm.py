"""ORM calls from a browser test, beside Playwright's sync API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.db import connections


def orm(function, *args, **kwargs):
    """Run an ORM call in a short-lived thread and return its result.

    Playwright's sync API runs test code in a greenlet beside an event loop: Django refuses ORM
    calls there, and a connection opened there would never be closed (the test database could not
    be dropped at the end). A thread of its own, closing its connection, avoids both.
    """

    def call():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()
