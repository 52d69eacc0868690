"""Fixtures for the cross-app tests in tests/: the live stack (see tests/live_stack.py)."""

from tests.live_stack import live_stack  # noqa: F401 (registers the fixture for tests/)
