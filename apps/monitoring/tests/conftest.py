"""Fixtures for monitoring tests: rules as a test needs them, empty queues, the kill switch released."""

from __future__ import annotations

import django_rq
import pytest
from django.conf import settings
from rq.suspension import resume

from apps.monitoring.models import SafetyRule
from apps.monitoring.rules import ensure_default_rules


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


@pytest.fixture
def only_rules(db):
    """Replace every safety rule with the ones the test creates: ``only_rules(name=..., kind=..., ...)``."""
    SafetyRule.objects.all().delete()

    def make(**fields) -> SafetyRule:
        fields.setdefault("severity", "warning")
        return SafetyRule.objects.create(**fields)

    return make


@pytest.fixture
def default_rules(db):
    """The seeded defaults (transactional tests flush data migrations away)."""
    ensure_default_rules(SafetyRule)
