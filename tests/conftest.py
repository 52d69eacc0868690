"""Fixtures for the cross-app tests in tests/: the live stack (see tests/stack.py)."""

from tests.stack import live_stack  # noqa: F401 (registers the fixture for tests/)
