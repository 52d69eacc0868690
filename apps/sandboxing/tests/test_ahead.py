"""``runner.Ahead``: the run's sandbox got in a thread while the caller works (a warm one from the
worker's pool, else a cold start), taken by the run or removed; in a forked child (RQ's work horse)
too, which has none of its parent's threads."""

from __future__ import annotations

import os
import uuid

import pytest

from apps.sandboxing import engine, pool, runner
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import LABEL_RUN, Profile, runtime_for
from apps.sandboxing.tests.conftest import small_limits
from tests.stack import wait_until

pytestmark = pytest.mark.docker


def request() -> RunRequest:
    return RunRequest(
        run_id=str(uuid.uuid4()), runtime=runtime_for("python"), code=b"print(6 * 7)", stdin=b"", limits=small_limits()
    )


@pytest.fixture
def owner():
    name = f"test-worker-{uuid.uuid4().hex[:8]}"
    yield name
    pool.remove_pools_of(name)


def warm_pool_of(owner: str, size: int = 1) -> None:
    pool.WarmPool(
        owner, size, lambda: [Profile(image=runtime_for("python").image, limits=small_limits())]
    ).refill_once()


def named(run: RunRequest) -> list[dict]:
    """The containers named for ``run`` (a warm pool's sandbox carries the pool's run label, not the run's)."""
    return engine.client().api.containers(all=True, filters={"name": f"^/crucible-{run.run_id}$"})


def containers_of(run: RunRequest) -> list[dict]:
    return engine.client().api.containers(all=True, filters={"label": f"{LABEL_RUN}={run.run_id}"})


def test_a_run_takes_the_sandbox_started_ahead_and_removes_it_with_its_end():
    run = request()
    ahead = runner.Ahead(run)
    output = []
    result = runner.run(run, on_output=lambda _s, data: output.append(data), control=lambda: None, ahead=ahead)
    assert (result.outcome, result.exit_code, b"".join(output)) == (Outcome.EXITED, 0, b"42\n")
    assert containers_of(run) == []


def test_a_sandbox_started_ahead_and_not_taken_is_removed_once_it_is_up():
    run = request()
    ahead = runner.Ahead(run)
    ahead.discard()  # most likely before the engine created it
    ahead._future.result(timeout=60)  # it was created and started
    wait_until(lambda: containers_of(run) == [], 60, interval=0.1, what="the sandbox removed")


def test_a_forked_child_starts_its_own_sandbox_ahead_after_its_parent_did():
    """The parent's starter threads do not exist in the child: it makes its own (a job in RQ's forked
    work horse waited for a start that never came, until the job's timeout)."""
    parent = request()
    runner.run(parent, on_output=lambda *_: None, control=lambda: None, ahead=runner.Ahead(parent))
    child_run = request()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its sandbox started ahead ran the program
        code = 1
        try:
            engine.reset()
            ahead = runner.Ahead(child_run)
            result = runner.run(child_run, on_output=lambda *_: None, control=lambda: None, ahead=ahead)
            code = 0 if result.exit_code == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert containers_of(child_run) == []


def test_a_run_takes_a_warm_sandbox_claimed_ahead_from_its_workers_pool(owner):
    warm_pool_of(owner, 2)
    run = request()
    ahead = runner.Ahead(run, pool_owner=owner)
    ahead._future.result(timeout=60)
    assert len(named(run)) == 1 and len(pool.idle(owner)) == 1  # claimed (renamed) before the run began
    output = []
    result = runner.run(run, on_output=lambda _s, data: output.append(data), control=lambda: None, ahead=ahead)
    assert (result.outcome, result.exit_code, result.warm, b"".join(output)) == (Outcome.EXITED, 0, True, b"42\n")
    assert named(run) == [] and len(pool.idle(owner)) == 1  # the other still waits


def test_an_empty_pool_means_a_cold_start_ahead(owner):
    run = request()
    result = runner.run(run, on_output=lambda *_: None, control=lambda: None, ahead=runner.Ahead(run, pool_owner=owner))
    assert (result.outcome, result.exit_code, result.warm) == (Outcome.EXITED, 0, False)
    assert containers_of(run) == []


def test_a_warm_sandbox_claimed_ahead_and_not_taken_is_removed_and_its_pool_refills_at_once(owner):
    """The run was not claimed after all (cancelled meanwhile, taken by another worker): the sandbox
    held no code, but it was claimed, so it goes; its pool need not wait for a run that never came."""
    warm_pool_of(owner)
    run = request()
    ahead = runner.Ahead(run, pool_owner=owner)
    ahead._future.result(timeout=60)
    assert not pool._run_over_event(owner).is_set()  # the refill waits for the run that claimed
    ahead.discard()
    wait_until(lambda: named(run) == [], 60, interval=0.1, what="the sandbox removed")
    assert pool._run_over_event(owner).is_set() and pool.idle(owner) == []


def test_several_programs_run_in_the_sandbox_got_ahead_warm_or_cold(owner):
    """A sample under each of its tests: the sandbox got ahead serves them all, then goes."""
    warm_pool_of(owner)
    code = b"import sys\nprint(int(sys.stdin.read()) * 2)\n"
    for expected_warm in (True, False):  # the pool's one sandbox first, then a cold start
        run = request()
        ahead = runner.Ahead(run, pool_owner=owner)
        results = runner.run_programs(
            run,
            [runner.Program(code, b"1"), runner.Program(code, b"2")],
            on_output=lambda *_: None,
            control=lambda: None,
            ahead=ahead,
        )
        assert [(r.outcome, r.exit_code, r.warm) for r in results] == [(Outcome.EXITED, 0, expected_warm)] * 2
        assert named(run) == [] and containers_of(run) == []


def test_a_sandbox_got_ahead_is_refused_for_a_batch_that_keeps_its_own(owner):
    """With ``reuse`` the runner claims the group's kept sandbox itself, under the run's name."""
    run = request()
    ahead = runner.Ahead(run)
    try:
        with pytest.raises(ValueError):
            runner.run_programs(
                run,
                [runner.Program(b"print(1)")],
                on_output=lambda *_: None,
                control=lambda: None,
                reuse=runner.Reuse(owner=owner, group="a-batch", background=False),
                ahead=ahead,
            )
    finally:
        ahead.discard()
    ahead._future.result(timeout=60)  # it was created and started (removed once up)
    wait_until(lambda: containers_of(run) == [], 60, interval=0.1, what="the sandbox got ahead removed")
