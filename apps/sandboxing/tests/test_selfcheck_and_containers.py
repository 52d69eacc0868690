"""Self-check of the enforced policy, and this instance's container listing/removal."""

import uuid

import pytest

from apps.sandboxing import selfcheck
from apps.sandboxing.containers import list_instance_containers, remove
from apps.sandboxing.runner import Sandbox
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker


def test_the_engine_enforces_the_whole_policy():
    assert selfcheck.self_check(force=True) == []
    selfcheck.require_policy()


def test_the_self_check_result_is_cached(monkeypatch):
    selfcheck.self_check(force=True)
    monkeypatch.setattr(selfcheck, "_problems", lambda limits: pytest.fail("not cached"))
    assert selfcheck.self_check() == []


def test_an_engine_that_cannot_apply_the_policy_makes_the_sandbox_unavailable(settings):
    settings.SANDBOX_RUNTIME = "no-such-runtime"
    problems = selfcheck.self_check(force=True)
    assert problems and "runtime" in problems[0].lower()
    with pytest.raises(selfcheck.SandboxUnavailable):
        selfcheck.require_policy()


def test_this_instances_containers_are_listed_with_their_run_and_removed():
    run_id = str(uuid.uuid4())
    sandbox = Sandbox.create(run_id=run_id, image="crucible-sandbox:latest", limits=small_limits())
    try:
        assert (sandbox.container_id, run_id) in list_instance_containers()
        remove(sandbox.container_id)
        assert list_instance_containers() == []
        remove(sandbox.container_id)  # already gone: fine
    finally:
        sandbox.remove()
