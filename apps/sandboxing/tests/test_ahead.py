"""``runner.Ahead``: a cold sandbox started in a thread while the caller works, taken by the run or
removed; in a forked child (RQ's work horse) too, which has none of its parent's threads."""

from __future__ import annotations

import os
import uuid

import pytest

from apps.sandboxing import engine, runner
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import LABEL_RUN, runtime_for
from apps.sandboxing.tests.conftest import small_limits
from tests.stack import wait_until

pytestmark = pytest.mark.docker


def request() -> RunRequest:
    return RunRequest(
        run_id=str(uuid.uuid4()), runtime=runtime_for("python"), code=b"print(6 * 7)", stdin=b"", limits=small_limits()
    )


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
