"""A container the engine can neither start nor remove (its runtime hangs in ``create``, as a wedged
gVisor sandbox did) neither wedges the run nor survives it: bounded waits, then release and removal.

Runs against a private engine whose only extra runtime is ``hang`` (``hang_runtime.sh``).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from apps.evaluations import reconciler
from apps.sandboxing import containers, engine, engine_runtime, runner
from apps.sandboxing.outcomes import Failure, Outcome, RunRequest
from apps.sandboxing.policy import Limits, Profile, container_config, runtime_for
from tests.stack import PrivateDocker, wait_until

pytestmark = pytest.mark.faults

HANG_RUNTIME = Path(__file__).with_name("hang_runtime.sh")
ENGINE_TIMEOUT_S = 4.0


@pytest.fixture
def hanging_engine(settings):
    private = PrivateDocker(config={"runtimes": {"hang": {"path": str(HANG_RUNTIME)}}})
    try:
        private.start()
        private.load_image(settings.SANDBOX_IMAGE)
        settings.DOCKER_HOST = private.host
        settings.SANDBOX_RUNTIME = "hang"
        settings.SANDBOX_ENGINE_TIMEOUT_S = ENGINE_TIMEOUT_S
        engine.reset()
        engine_runtime._cache.clear()
        yield private
    finally:
        engine.reset()
        private.cleanup()


def request() -> RunRequest:
    return RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_for("python"),
        code=b"print(1)",
        stdin=b"",
        limits=Limits.from_settings(timeout_s=5),
    )


def test_a_run_whose_sandbox_never_starts_ends_in_bounded_time_and_leaves_nothing(hanging_engine):
    started = time.monotonic()
    result = runner.run(request(), on_output=lambda *_: None, control=lambda: None)
    took = time.monotonic() - started
    assert (result.outcome, result.failure) == (Outcome.ERROR, Failure.ENGINE_FAULT)
    assert took < 6 * ENGINE_TIMEOUT_S, took  # a start and a removal, each bounded, not forever
    wait_until(lambda: containers.list_instance_containers() == [], 30, interval=0.5, what="the container removed")
    assert containers.runtime_processes_holding("hang_runtime") == []


@pytest.mark.django_db
def test_the_reconciler_releases_and_removes_a_container_stuck_in_create(hanging_engine, settings):
    run_id = str(uuid.uuid4())
    profile = Profile(image=settings.SANDBOX_IMAGE, limits=Limits.from_settings(), engine_runtime="hang")
    api = engine.client().api
    config = container_config(profile, name=f"crucible-{run_id}", run_id=run_id)
    container = engine.client().containers.create(**{k: v for k, v in config.items() if k != "masked_paths"})
    # A worker's start that hangs in the runtime (on its own thread: the call does not return).
    threading.Thread(target=lambda: _start_quietly(api, container.id), daemon=True).start()
    wait_until(lambda: containers.runtime_processes(container.id), 20, interval=0.2, what="the runtime hanging")
    removed = reconciler.remove_orphan_containers()
    assert removed == [container.id]
    wait_until(lambda: containers.list_instance_containers() == [], 30, interval=0.5, what="the container gone")
    assert containers.runtime_processes(container.id) == []


def _start_quietly(api, container_id: str) -> None:
    try:
        api.start(container_id)
    except Exception:
        pass
