"""A worker's remover takes a finished run's sandbox off the run's critical path, and never more of
them than its capacity; without a remover the run removes its own sandbox before it returns."""

import os
import threading
import uuid

import pytest

from apps.sandboxing import containers, removal, runner
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import runtime_for
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker


class HeldSandbox:
    """Stands in the remover's way: its removal waits until ``release`` (the engine busy removing)."""

    container_id = "held-sandbox"

    def __init__(self):
        self.released = threading.Event()
        self.removing = threading.Event()

    def remove(self) -> None:
        self.removing.set()
        self.released.wait(30)

    def release(self) -> None:
        self.released.set()


def request(code: str = "print('hello')") -> RunRequest:
    return RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_for("python"),
        code=code.encode(),
        stdin=b"",
        limits=small_limits(),
    )


def run_ids() -> set[str]:
    return {run_id for _, run_id in containers.list_instance_containers()}


@pytest.fixture
def remover():
    """A started remover installed for this process, as a worker that does not fork has one."""
    remover = removal.Remover(capacity=2, name="test-remover")
    remover.start()
    removal.install(remover)
    yield remover
    removal.install(None)
    remover.drain()


def test_without_a_remover_a_run_removes_its_sandbox_before_it_returns():
    alices = request()
    result = runner.run(alices, on_output=lambda *_: None, control=lambda: None)
    assert result.outcome is Outcome.EXITED
    assert alices.run_id not in run_ids()


def test_a_worker_with_a_remover_hands_alices_sandbox_to_it_and_it_is_gone_once_drained(remover):
    alices = request()
    output = []
    result = runner.run(
        alices, on_output=lambda _stream, data: output.append(data), control=lambda: None, remove_behind=True
    )
    assert (result.outcome, result.exit_code, b"".join(output)) == (Outcome.EXITED, 0, b"hello\n")
    remover.drain()
    assert remover.removed == 1  # removed by the remover's thread, not by the run
    assert alices.run_id not in run_ids()


def test_the_remover_of_a_batch_sample_under_tests_takes_its_sandbox_too(remover):
    bobs = request()
    programs = [runner.Program(code=b"print(1)"), runner.Program(code=b"print(2)")]
    results = runner.run_programs(bobs, programs, on_output=lambda *_: None, control=lambda: None, remove_behind=True)
    assert [r.exit_code for r in results] == [0, 0]
    remover.drain()
    assert remover.removed == 1
    assert bobs.run_id not in run_ids()


def test_a_run_that_is_not_an_evaluations_removes_its_own_sandbox_even_in_a_worker_with_a_remover(remover):
    canary = request()  # as the sandbox self-check's canary: the orphan sweep would not remove it
    runner.run(canary, on_output=lambda *_: None, control=lambda: None)
    assert canary.run_id not in run_ids()
    assert (remover.pending, remover.removed) == (0, 0)


def test_a_run_removes_its_own_sandbox_when_the_remover_has_its_capacity_waiting(remover):
    held = [HeldSandbox(), HeldSandbox()]
    try:
        assert all(remover.hand_over(sandbox) for sandbox in held)  # the capacity, 2, is taken
        assert not remover.hand_over(HeldSandbox())
        carols = request()
        runner.run(carols, on_output=lambda *_: None, control=lambda: None, remove_behind=True)
        assert carols.run_id not in run_ids()  # removed by the run itself, before it returned
        assert remover.pending == 2
    finally:
        for sandbox in held:
            sandbox.release()
    remover.drain()
    assert (remover.pending, remover.removed) == (0, 2)


def test_a_remover_in_a_forked_child_is_not_running_there_so_the_child_removes_its_own():
    remover = removal.Remover(capacity=2)
    remover.start()
    try:
        remover.pid = -1  # as the copy a forked work horse inherits: the thread is in the parent
        assert not remover.running
        assert not remover.hand_over(HeldSandbox())
    finally:
        remover.pid = os.getpid()
        remover.drain()


def test_a_drain_that_outlasts_its_time_leaves_the_rest_to_the_reconciler():
    remover = removal.Remover(capacity=2, name="test-remover-slow")
    remover.start()
    held = HeldSandbox()
    assert remover.hand_over(held)
    held.removing.wait(10)
    assert remover.drain(timeout_s=0.1) == 0  # it returns; the held removal is still going
    held.release()
