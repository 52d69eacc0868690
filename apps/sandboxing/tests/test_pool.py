"""Warm pools against the real engine: idle sandboxes under the whole policy, each used by exactly one
run and removed with it, cold starts when nothing matches, and nothing left behind."""

from __future__ import annotations

import os
import threading
import time
import uuid

import docker.errors
import pytest

from apps.sandboxing import containers, engine, pool, runner
from apps.sandboxing import sandbox as sandbox_module
from apps.sandboxing.execution import execute
from apps.sandboxing.outcomes import Failure, Outcome, RunRequest
from apps.sandboxing.policy import LABEL_POOL, LABEL_PROFILE, Profile, runtime_for
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError
from apps.sandboxing.tests.conftest import small_limits
from tests.stack import wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def owner():
    name = f"test-worker-{uuid.uuid4().hex[:8]}"
    yield name
    pool.remove_pools_of(name)


def profile(**limits) -> Profile:
    return Profile(image=runtime_for("python").image, limits=small_limits(**limits))


def request(**limits) -> RunRequest:
    return RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_for("python"),
        code=b"print(6 * 7)",
        stdin=b"",
        limits=small_limits(**limits),
    )


def test_a_refill_starts_idle_locked_down_sandboxes_labelled_with_their_owner_and_profile(owner):
    warm = pool.WarmPool(owner, 2, lambda: [profile()])
    assert warm.refill_once() == 2
    assert warm.refill_once() == 0  # full
    idle = pool.idle(owner, profile().key)
    assert len(idle) == 2
    attrs = engine.client().api.inspect_container(idle[0])
    host = attrs["HostConfig"]
    assert (host["NetworkMode"], host["ReadonlyRootfs"], host["CapDrop"]) == ("none", True, ["ALL"])
    assert attrs["Config"]["User"] == "10001:10001"
    assert attrs["Config"]["Labels"][LABEL_POOL] == owner
    assert attrs["Config"]["Labels"][LABEL_PROFILE] == profile().key
    assert warm.stats.started == 2 and len(warm.stats.start_ms) == 2


def test_a_refill_pass_asks_the_engine_to_list_the_pool_once(owner, monkeypatch):
    warm = pool.WarmPool(owner, 2, lambda: [profile(), profile(memory_mb=96)])
    assert warm.refill_once() == 4
    calls = EngineCalls(monkeypatch)
    assert warm.refill_once() == 0  # full: each profile still has its two
    assert calls.listed == 1


def test_each_idle_sandbox_goes_to_exactly_one_run(owner):
    pool.WarmPool(owner, 2, lambda: [profile()]).refill_once()
    first = pool.claim(owner, profile(), "run-a")
    second = pool.claim(owner, profile(), "run-b")
    try:
        assert first is not None and second is not None
        assert first.container_id != second.container_id
        assert pool.claim(owner, profile(), "run-c") is None  # none idle left
        names = {engine.client().api.inspect_container(s.container_id)["Name"] for s in (first, second)}
        assert names == {"/crucible-run-a", "/crucible-run-b"}
    finally:
        for sandbox in (first, second):
            if sandbox is not None:
                sandbox.remove()


def test_a_run_through_the_pool_is_warm_runs_once_and_its_sandbox_goes_with_it(owner):
    pool.WarmPool(owner, 2, lambda: [profile()]).refill_once()
    output = []
    result = runner.run(
        request(), on_output=lambda _s, data: output.append(data), control=lambda: None, pool_owner=owner
    )
    assert (result.outcome, result.exit_code, result.warm) == (Outcome.EXITED, 0, True)
    assert b"".join(output) == b"42\n"
    remaining = pool.idle(owner)
    assert len(remaining) == 1  # the claimed one was removed with its run; the other waits
    assert len(engine.client().api.containers(all=True, filters={"label": f"{LABEL_POOL}={owner}"})) == 1


def test_a_run_whose_limits_match_no_warm_profile_starts_cold(owner):
    pool.WarmPool(owner, 1, lambda: [profile()]).refill_once()
    result = runner.run(request(memory_mb=96), on_output=lambda *_: None, control=lambda: None, pool_owner=owner)
    assert (result.outcome, result.warm) == (Outcome.EXITED, False)
    assert len(pool.idle(owner)) == 1  # untouched


def test_the_runner_limits_do_not_split_profiles(owner):
    """A run asking for another timeout still fits a warm sandbox: the timeout is the runner's, not the engine's."""
    assert profile(timeout_s=2).key == profile(timeout_s=9).key
    assert profile(memory_mb=96).key != profile().key


def test_an_empty_pool_means_a_cold_start(owner):
    result = runner.run(request(), on_output=lambda *_: None, control=lambda: None, pool_owner=owner)
    assert (result.outcome, result.warm) == (Outcome.EXITED, False)


def test_drain_stops_the_refill_and_removes_the_idle_sandboxes(owner):
    warm = pool.WarmPool(owner, 2, lambda: [profile()])
    warm.start()
    try:
        wait_until(lambda: len(pool.idle(owner)) == 2, 60, interval=0.2, what="the pool filled")
    finally:
        drained = warm.drain()
    assert len(drained) == 2
    assert pool.idle(owner) == [] and owner not in pool.pool_owners()


def test_a_full_pool_asks_the_engine_only_at_its_periodic_check(owner, monkeypatch):
    """A pass lists the engine's pool containers; a full pool with nothing claimed makes one per
    CHECK_EVERY_S (it was four a second per worker, whatever happened)."""
    monkeypatch.setattr(pool, "CHECK_EVERY_S", 60.0)
    warm = pool.WarmPool(owner, 1, lambda: [profile()])
    warm.start()
    try:
        wait_until(lambda: len(pool.idle(owner)) == 1, 60, interval=0.2, what="the pool filled")
        listed = []
        listing = pool._pool_containers
        monkeypatch.setattr(pool, "_pool_containers", lambda *a, **k: listed.append(a) or listing(*a, **k))
        warm._stop.wait(1.5)  # the refill thread's engine client is its own: count the listings it asks for
        assert listed == []
    finally:
        warm.drain()


def test_a_claim_wakes_the_refill_at_once(owner, monkeypatch):
    """With the periodic check a minute away, the sandbox a run took is replaced all the same (here
    no runner says the run is over: after ``REFILL_AFTER_CLAIM_MAX_S``)."""
    monkeypatch.setattr(pool, "CHECK_EVERY_S", 60.0)
    warm = pool.WarmPool(owner, 1, lambda: [profile()])
    warm.start()
    claimed = None
    try:
        wait_until(lambda: len(pool.idle(owner)) == 1, 60, interval=0.2, what="the pool filled")
        claimed = pool.claim(owner, profile(), "run-a")
        assert claimed is not None
        wait_until(lambda: len(pool.idle(owner)) == 1, 30, interval=0.2, what="the pool refilled after the claim")
        assert claimed.container_id not in pool.idle(owner)
        assert warm.stats.started == 2
    finally:
        if claimed is not None:
            claimed.remove()
        warm.drain()


class RefillPasses:
    """Counts the refill passes of ``warm`` (each still starts what is missing)."""

    def __init__(self, warm, monkeypatch):
        self.times: list[float] = []
        refill_once = warm.refill_once
        monkeypatch.setattr(warm, "refill_once", lambda: self.times.append(time.monotonic()) or refill_once())

    def since(self, moment: float) -> int:
        return len([t for t in self.times if t >= moment])


def test_the_refill_after_a_claim_waits_for_the_run_that_took_the_sandbox_to_be_over(owner, monkeypatch):
    """A sandbox starting beside a short run takes CPU from its program and from the recording of its
    end: the replacement starts once the runner says the run is over (its result handed over)."""
    monkeypatch.setattr(pool, "CHECK_EVERY_S", 60.0)
    monkeypatch.setattr(pool, "REFILL_AFTER_CLAIM_MAX_S", 60.0)
    warm = pool.WarmPool(owner, 1, lambda: [profile()])
    passes = RefillPasses(warm, monkeypatch)
    warm.start()
    try:
        wait_until(lambda: len(pool.idle(owner)) == 1, 60, interval=0.2, what="the pool filled")
        claimed_at, seen_at_result = time.monotonic(), []
        result = runner.run(
            request(),
            on_output=lambda _s, _d: None,
            control=lambda: None,
            pool_owner=owner,
            on_result=lambda _r: seen_at_result.append(passes.since(claimed_at)),
        )
        assert result.warm and seen_at_result == [0]  # no refill while it ran and was recorded
        # (It may have begun while the runner removed the sandbox, after saying the run was over.)
        wait_until(lambda: passes.since(claimed_at), 10, interval=0.02, what="a refill pass once the run was over")
        wait_until(lambda: len(pool.idle(owner)) == 1, 60, interval=0.2, what="the pool refilled")
    finally:
        warm.drain()


def test_a_run_that_never_says_it_is_over_delays_the_refill_by_the_longest_wait_only(owner, monkeypatch):
    monkeypatch.setattr(pool, "CHECK_EVERY_S", 60.0)
    monkeypatch.setattr(pool, "REFILL_AFTER_CLAIM_MAX_S", 1.0)
    warm = pool.WarmPool(owner, 1, lambda: [profile()])
    passes = RefillPasses(warm, monkeypatch)
    warm.start()
    claimed = None
    try:
        wait_until(lambda: len(pool.idle(owner)) == 1, 60, interval=0.2, what="the pool filled")
        claimed_at = time.monotonic()
        claimed = pool.claim(owner, profile(), "run-never-over")
        warm._stop.wait(0.5)
        assert passes.since(claimed_at) == 0
        wait_until(lambda: passes.since(claimed_at), 10, interval=0.02, what="the refill after the longest wait")
    finally:
        if claimed is not None:
            claimed.remove()
        warm.drain()


def test_a_pool_waiting_for_a_run_to_be_over_drains_at_once(owner, monkeypatch):
    monkeypatch.setattr(pool, "REFILL_AFTER_CLAIM_MAX_S", 600.0)
    warm = pool.WarmPool(owner, 1, lambda: [profile()])
    warm.start()
    wait_until(lambda: len(pool.idle(owner)) == 1, 60, interval=0.2, what="the pool filled")
    claimed = pool.claim(owner, profile(), "run-still-running")
    try:
        warm._stop.wait(0.3)  # the refill thread now waits for that run
        began = time.monotonic()
        warm.drain()
        assert time.monotonic() - began < 30 and not warm._thread.is_alive()
    finally:
        claimed.remove()


def test_a_pool_of_size_zero_starts_nothing(owner):
    warm = pool.WarmPool(owner, 0, lambda: [profile()])
    warm.start()
    assert warm.drain() == [] and pool.idle(owner) == []


def test_a_pool_sandbox_that_stopped_is_removed_by_the_next_refill_and_replaced(owner):
    """The engine restarted under the pool, or the idle process died: that sandbox can never be claimed."""
    warm = pool.WarmPool(owner, 1, lambda: [profile()])
    warm.refill_once()
    [stopped] = pool.idle(owner)
    engine.client().api.kill(stopped)
    wait_until(lambda: pool.idle(owner) == [], 30, interval=0.2, what="the sandbox stopped")
    assert warm.refill_once() == 1
    left = engine.client().api.containers(all=True, filters={"label": f"{LABEL_POOL}={owner}"})
    assert [c["Id"] for c in left] == pool.idle(owner) and stopped not in pool.idle(owner)


def test_a_retried_run_replaces_the_container_an_earlier_attempt_could_not_remove():
    """A sandbox is named for its run; the removal after a first attempt failed (the engine was
    restarting), so the run's next attempt finds the name taken by its own instance's container."""
    run_id = str(uuid.uuid4())
    earlier = Sandbox.create(profile(), run_id=run_id)
    later = Sandbox.create(profile(), run_id=run_id)
    try:
        assert later.container_id != earlier.container_id
        with pytest.raises(docker.errors.NotFound):
            engine.client().api.inspect_container(earlier.container_id)
    finally:
        later.remove()


def test_a_retried_run_gets_its_name_when_another_remover_took_the_earlier_container_meanwhile(monkeypatch):
    """The reconciler's orphan sweep removes the earlier attempt's container between the engine's
    refusal of the name and the sandbox's look at who holds it: the name is free, so it is used."""
    run_id = str(uuid.uuid4())
    earlier = Sandbox.create(profile(), run_id=run_id)
    engine_create = sandbox_module._engine_create

    def refused_then_removed_by_the_reconciler(config):
        try:
            return engine_create(config)
        except docker.errors.APIError:
            containers.remove(earlier.container_id)
            raise

    monkeypatch.setattr(sandbox_module, "_engine_create", refused_then_removed_by_the_reconciler)
    later = Sandbox.create(profile(), run_id=run_id)
    later.remove()
    assert later.container_id != earlier.container_id


def test_a_retried_run_waits_for_the_removal_another_remover_has_in_progress(monkeypatch):
    """The engine answers "removal already in progress" while the reconciler removes the earlier
    attempt's container: the name is used once that removal is over, not refused."""
    run_id = str(uuid.uuid4())
    earlier = Sandbox.create(profile(), run_id=run_id)
    remove = containers.remove
    removing = threading.Timer(0.5, remove, args=(earlier.container_id,))

    def in_progress_elsewhere(name):
        if name != f"crucible-{run_id}":
            return remove(name)
        if removing.ident is None:
            removing.start()
        return None

    monkeypatch.setattr(containers, "remove", in_progress_elsewhere)
    later = Sandbox.create(profile(), run_id=run_id)
    later.remove()
    assert later.container_id != earlier.container_id and not removing.is_alive()


def test_a_name_held_by_a_container_of_another_instance_is_refused_and_left_alone():
    run_id = str(uuid.uuid4())
    client = engine.client()
    foreign = client.api.create_container(runtime_for("python").image, name=f"crucible-{run_id}", command=["true"])
    try:
        with pytest.raises(SandboxSetupError) as refused:
            Sandbox.create(profile(), run_id=run_id)
        assert refused.value.failure == Failure.SETUP_REFUSED and "already in use" in str(refused.value)
        assert client.api.inspect_container(foreign["Id"])["Id"] == foreign["Id"]
    finally:
        client.api.remove_container(foreign["Id"], force=True)


def test_a_claimed_pool_sandbox_is_listed_under_its_run_so_the_reconciler_can_remove_it(owner):
    """It keeps the pool id label it started with; its name says which run has it."""
    pool.WarmPool(owner, 1, lambda: [profile()]).refill_once()
    run_id = str(uuid.uuid4())
    sandbox = pool.claim(owner, profile(), run_id)
    try:
        assert (sandbox.container_id, run_id) in containers.list_instance_containers()
    finally:
        sandbox.remove()


class EngineCalls:
    """Counts what a claim asks the engine to list and inspect (every call still goes to the engine)."""

    def __init__(self, monkeypatch):
        self.listed = self.inspected = 0
        api = engine.client().api
        containers_, inspect = api.containers, api.inspect_container

        def counted_containers(*args, **kwargs):
            self.listed += 1
            return containers_(*args, **kwargs)

        def counted_inspect(*args, **kwargs):
            self.inspected += 1
            return inspect(*args, **kwargs)

        monkeypatch.setattr(api, "containers", counted_containers)
        monkeypatch.setattr(api, "inspect_container", counted_inspect)


def test_a_sandbox_this_process_started_is_claimed_by_its_rename_alone(owner, monkeypatch):
    pool.WarmPool(owner, 1, lambda: [profile()]).refill_once()
    calls = EngineCalls(monkeypatch)
    sandbox = pool.claim(owner, profile(), "run-a")
    try:
        assert sandbox is not None and (calls.listed, calls.inspected) == (0, 0)
        assert engine.client().api.inspect_container(sandbox.container_id)["Name"] == "/crucible-run-a"
        result = execute(sandbox, request(), on_output=lambda *_: None, control=lambda: None, attach=True)
        assert (result.outcome, result.exit_code) == (Outcome.EXITED, 0)
    finally:
        if sandbox is not None:
            sandbox.remove()


def test_a_sandbox_started_here_that_was_removed_or_stopped_meanwhile_is_passed_over(owner):
    pool.WarmPool(owner, 3, lambda: [profile()]).refill_once()
    newest_first = list(reversed(pool._started_here[(owner, profile().key)]))
    containers.remove(newest_first[0].container_id)  # removed (by the reconciler, a drain)
    engine.client().api.kill(newest_first[1].container_id)  # its idle process died
    wait_until(lambda: newest_first[1].container_id not in pool.idle(owner), 30, interval=0.2, what="it stopped")
    sandbox = pool.claim(owner, profile(), "run-a")
    try:
        assert sandbox is not None and sandbox.container_id == newest_first[2].container_id
        assert pool.claim(owner, profile(), "run-b") is None  # the stopped one is not handed out
    finally:
        if sandbox is not None:
            sandbox.remove()


def test_a_sandbox_another_process_started_is_found_by_listing(owner):
    """A worker restarted, or its pool was filled by another process of the same owner."""
    pool.WarmPool(owner, 1, lambda: [profile()]).refill_once()
    pool._started_here.pop((owner, profile().key))
    sandbox = pool.claim(owner, profile(), "run-a")
    try:
        assert sandbox is not None
        assert engine.client().api.inspect_container(sandbox.container_id)["Name"] == "/crucible-run-a"
    finally:
        if sandbox is not None:
            sandbox.remove()


def claimed_in_a_forked_child(owner: str, run_id: str) -> str:
    """The id of the sandbox a forked child (a work horse) claims for ``run_id``, "" for none; the child
    exits without removing it, as a horse killed mid-run does."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            sandbox = pool.claim(owner, profile(), run_id)
            os.write(write_end, (sandbox.container_id if sandbox is not None else "").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as answer:
        return answer.read()


def test_a_work_horse_never_claims_the_sandbox_an_earlier_horse_claimed(owner):
    """With WORKER_FORK=true each job runs in a horse forked from the worker, whose list of the sandboxes
    its refill started never hears of a horse's claim."""
    pool.WarmPool(owner, 2, lambda: [profile()]).refill_once()
    first = claimed_in_a_forked_child(owner, "run-a")
    second = claimed_in_a_forked_child(owner, "run-b")
    assert first and second and first != second
    assert claimed_in_a_forked_child(owner, "run-c") == ""  # both taken: the third run starts cold
    names = {engine.client().api.inspect_container(c)["Name"] for c in (first, second)}
    assert names == {"/crucible-run-a", "/crucible-run-b"}
