"""Fixtures of the fault-injection suite: private services and a stack (see tests/stack.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.stack import PrivateStack, running_private_services, wait_until

SYSTEM_DOCKER = "unix:///var/run/docker.sock"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def fault_base():
    base = Path(tempfile.mkdtemp(prefix="crucible-faults-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def private_services(fault_base):
    """A private PostgreSQL cluster and Redis, migrated, with an API user; stopped at the end."""
    with running_private_services(fault_base) as services:
        yield services


@pytest.fixture(scope="session")
def stack(private_services, fault_base):
    """web + 2 workers + the reconciler on the private services and the system Docker engine."""
    db, redis = private_services
    stack = PrivateStack(fault_base / "stack", db, redis, SYSTEM_DOCKER, workers=2)
    stack.prepare()
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        stack.remove_containers()


@pytest.fixture
def fresh(stack, request):
    """Per test: a stack with every process up and nothing active; prints the logs on failure."""
    stack.supervise = True
    wait_until(lambda: all(p.poll() is None for p in stack.processes.values()), 15, what="stack processes up")
    yield stack
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(stack.log_tail())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
