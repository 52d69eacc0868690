"""Fixtures for monitoring tests: safety rules as a test needs them."""

from __future__ import annotations

import pytest

from apps.monitoring.models import SafetyRule
from apps.monitoring.rules import ensure_default_rules


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
