"""Fixtures for the console's tests: empty queues, and the kill switch released around every test."""

from __future__ import annotations

import django_rq
import pytest
from django.conf import settings
from rq.suspension import resume


@pytest.fixture(autouse=True)
def kill_switch_released():
    """No test leaves the queues paused for the next one (the flag lives in Redis, not the test DB)."""
    connection = django_rq.get_connection("default")
    resume(connection)
    yield
    resume(connection)


@pytest.fixture
def empty_queues():
    for name in settings.RQ_QUEUES:
        django_rq.get_queue(name).empty()
