"""Which engine runtime sandboxes get: gVisor when the engine has it, never a guess."""

import pytest

from apps.sandboxing import engine, engine_runtime
from apps.sandboxing.outcomes import Failure, Outcome
from apps.sandboxing.tests.conftest import execute


@pytest.fixture
def no_cached_runtimes():
    engine_runtime._cache.clear()
    engine.reset()
    yield
    engine_runtime._cache.clear()
    engine.reset()


@pytest.mark.docker
def test_auto_gives_sandboxes_gvisor_because_the_engine_has_it(settings, no_cached_runtimes):
    settings.SANDBOX_RUNTIME = "auto"
    assert "runsc" in engine_runtime.available()  # registered by scripts/setup.sh
    assert engine_runtime.chosen() == "runsc"
    run = execute("print(open('/proc/version').read())")
    assert run.result.engine_runtime == "runsc"
    assert "4.4.0" in run.text  # the kernel gVisor presents, not the host's


def test_auto_gives_runc_only_when_the_engine_has_no_gvisor(settings, monkeypatch):
    settings.SANDBOX_RUNTIME = "auto"
    monkeypatch.setattr(engine_runtime, "available", lambda: frozenset({"runc", "io.containerd.runc.v2"}))
    assert engine_runtime.chosen() == "runc"


def test_auto_never_guesses_when_the_engine_cannot_say(settings, no_cached_runtimes):
    settings.SANDBOX_RUNTIME = "auto"
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    with pytest.raises(engine_runtime.RuntimeUnknown):
        engine_runtime.chosen()
    choice = engine_runtime.describe()
    assert (choice.chosen, choice.gvisor) == ("", False) and choice.problem


def test_a_run_that_cannot_learn_its_runtime_ends_in_an_engine_fault_not_under_runc(settings, no_cached_runtimes):
    settings.SANDBOX_RUNTIME = "auto"
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    run = execute("print(1)")
    assert (run.result.outcome, run.result.failure) == (Outcome.ERROR, Failure.ENGINE_FAULT)
    assert run.chunks == []


@pytest.mark.docker
def test_a_forced_runtime_is_used_as_it_is(settings, no_cached_runtimes):
    settings.SANDBOX_RUNTIME = "runc"
    run = execute("print(1)")
    assert (run.result.outcome, run.result.engine_runtime) == (Outcome.EXITED, "runc")


@pytest.mark.docker
def test_a_forced_runtime_the_engine_lacks_is_named_as_the_problem(settings, no_cached_runtimes):
    settings.SANDBOX_RUNTIME = "no-such-runtime"
    choice = engine_runtime.describe()
    assert choice.forced_but_missing
    assert "no-such-runtime" in choice.problem
