"""Several programs for one request, each in its own fresh process, one after another in one sandbox
(a new sandbox after one was killed): how a sample is run under each of its tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest

from apps.sandboxing import pool, runner
from apps.sandboxing.execution import execute
from apps.sandboxing.outcomes import Command, Outcome, RunRequest
from apps.sandboxing.policy import runtime_for
from apps.sandboxing.pool import remove_pools_of
from apps.sandboxing.runner import Program, Reuse, run_programs
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker


def run_all(programs, control=lambda: None, **limits):
    output: list[tuple[int, str, bytes]] = []
    current = [-1]

    def on_program(index):
        current[0] = index

    request = RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_for("python"),
        code=b"",
        stdin=b"",
        limits=small_limits(**limits),
    )
    results = run_programs(
        request,
        programs,
        on_output=lambda stream, data: output.append((current[0], stream, data)),
        control=control,
        on_program=on_program,
    )

    def stdout_of(index):
        return b"".join(data for i, stream, data in output if i == index and stream == "stdout")

    return results, stdout_of


def test_each_program_gets_its_own_stdin_and_ends_by_itself():
    code = b"import sys\nline = sys.stdin.read().strip()\nprint(int(line) * 2)\nsys.exit(0 if line != '3' else 4)\n"
    results, stdout_of = run_all([Program(code, b"1\n"), Program(code, b"2\n"), Program(code, b"3\n")])
    assert [(r.outcome, r.exit_code) for r in results] == [(Outcome.EXITED, 0)] * 2 + [(Outcome.EXITED, 4)]
    assert [stdout_of(i) for i in range(3)] == [b"2\n", b"4\n", b"6\n"]


def test_no_process_of_one_program_is_alive_when_the_next_starts():
    """The first leaves a child behind that would write forever; the second sees no other process."""
    leaver = b"import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('left one')\n"
    census = (
        b"import os\n"
        b"others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]\n"
        b"print(sorted(open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').strip() for p in others))\n"
    )
    results, stdout_of = run_all([Program(leaver), Program(census)])
    assert [r.outcome for r in results] == [Outcome.EXITED, Outcome.EXITED]
    assert stdout_of(1) == b"[b'/usr/local/libexec/crucible-helper idle']\n"  # the idle main process only


def test_a_program_that_timed_out_leaves_the_next_a_new_sandbox():
    marker = b"import os\nprint(os.path.exists('/tmp/mark'))\nopen('/tmp/mark', 'w').close()\n"
    spin = b"open('/tmp/mark', 'w').close()\nwhile True:\n    pass\n"
    results, stdout_of = run_all([Program(spin), Program(marker)], timeout_s=1)
    assert [r.outcome for r in results] == [Outcome.TIMED_OUT, Outcome.EXITED]
    assert stdout_of(1) == b"False\n"  # a fresh sandbox: the first one's /tmp is gone with it


def test_the_output_cap_is_shared_by_the_programs():
    loud = b"print('x' * 999)\n"
    results, _ = run_all([Program(loud), Program(loud), Program(loud)], output_cap_bytes=1500)
    assert [r.outcome for r in results][:2] == [Outcome.EXITED, Outcome.OUTPUT_CAPPED]
    assert sum(r.output_bytes for r in results) <= 1500


def test_a_stop_ends_the_sequence():
    asked = []

    def control():
        asked.append(1)
        return Command.STOP if len(asked) > 3 else None

    slow = b"import time\ntime.sleep(5)\n"
    results, _ = run_all([Program(slow), Program(slow)], control=control)
    assert [r.outcome for r in results] == [Outcome.STOPPED]


# --- reuse within a batch -----------------------------------------------------------------------

LITTER = (
    b"import os, subprocess, time\n"
    b"for place in ('/tmp', '/output', '/dev/shm'):\n"
    b"    os.makedirs(place + '/deep/er', exist_ok=True)\n"
    b"    open(place + '/deep/er/secret', 'w').write('from sample one')\n"
    b"    open(place + '/.hidden', 'w').write('x')\n"
    b"    os.symlink('/etc/passwd', place + '/link')\n"
    b"if os.fork() == 0:\n"
    b"    os.setsid()\n"
    b"    time.sleep(60)\n"
    b"print(os.uname().nodename)\n"
)
INSPECT = (
    b"import os\n"
    b"others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]\n"
    b"print(sorted(open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').strip() for p in others))\n"
    b"print({place: sorted(os.listdir(place)) for place in ('/tmp', '/output', '/dev/shm', '/sandbox')})\n"
)


@pytest.fixture
def reuse():
    owner = f"test-reuse-{uuid.uuid4().hex[:8]}"
    yield Reuse(owner=owner, group=str(uuid.uuid4()))
    remove_pools_of(owner)


def run_reusing(reuse, programs, **limits):
    output: list[tuple[str, bytes]] = []
    request = RunRequest(
        run_id=str(uuid.uuid4()), runtime=runtime_for("python"), code=b"", stdin=b"", limits=small_limits(**limits)
    )
    results = run_programs(
        request, programs, on_output=lambda s, d: output.append((s, d)), control=lambda: None, reuse=reuse
    )
    return results, b"".join(d for s, d in output if s == "stdout")


def test_the_next_sample_of_a_batch_gets_the_same_sandbox_reset_and_verified_clean(reuse):
    first, _ = run_reusing(reuse, [Program(LITTER)])
    assert first[0].outcome == Outcome.EXITED and first[0].warm is False
    parked = pool.idle(reuse.owner)
    assert len(parked) == 1
    second, seen = run_reusing(reuse, [Program(INSPECT)])
    assert second[0].outcome == Outcome.EXITED and second[0].warm is True
    idle = b"[b'/usr/local/libexec/crucible-helper idle']\n"  # the idle main process only
    assert seen == idle + b"{'/tmp': [], '/output': [], '/dev/shm': [], '/sandbox': ['main.py']}\n"
    assert pool.idle(reuse.owner) == parked  # the same container, parked again


def test_another_batch_never_gets_a_sandbox_kept_for_this_one(reuse):
    run_reusing(reuse, [Program(b"print(1)")])
    other = Reuse(owner=reuse.owner, group=str(uuid.uuid4()))
    results, _ = run_reusing(other, [Program(b"print(2)")])
    assert results[0].warm is False
    assert len(pool.idle(reuse.owner)) == 2


def test_a_sandbox_left_with_system_v_ipc_objects_is_discarded_not_reused(reuse):
    shm = b"import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget(0, 4096, 0o1000 | 0o600) >= 0\n"
    results, _ = run_reusing(reuse, [Program(shm)])
    assert results[0].outcome == Outcome.EXITED and results[0].exit_code == 0
    assert pool.idle(reuse.owner) == []


def test_a_killed_sandbox_is_never_reused(reuse):
    results, _ = run_reusing(reuse, [Program(b"while True:\n    pass\n")], timeout_s=1)
    assert results[0].outcome == Outcome.TIMED_OUT
    assert pool.idle(reuse.owner) == []


def test_a_parked_sandbox_nobody_claims_is_removed(reuse):
    run_reusing(reuse, [Program(b"print(1)")])
    assert len(pool.expire_parked(reuse.owner, idle_for_s=0)) == 1
    assert pool.idle(reuse.owner) == []


def test_the_files_the_programs_leave_in_output_are_collected_once_after_the_last():
    write = b"import sys\nopen('/output/' + sys.stdin.read().strip(), 'w').write('x')\n"
    results, _ = run_all([Program(write, b"first"), Program(write, b"second")])
    assert results[0].artifacts == []
    assert sorted(a.name for a in results[1].artifacts) == ["first", "second"]


# --- Reset in the background (a worker that runs jobs in its own process) --------------------------


@pytest.fixture
def reuse_in_background(reuse):
    yield Reuse(owner=reuse.owner, group=reuse.group, background=True)
    pool.wait_for_handovers(reuse.owner, 60)


def test_a_sandbox_reset_in_the_background_is_handed_to_the_next_sample_clean(reuse_in_background):
    first, _ = run_reusing(reuse_in_background, [Program(LITTER)])
    assert first[0].outcome == Outcome.EXITED and first[0].warm is False
    # At once, as a worker takes its next job: the claim waits for the reset, and gets the same sandbox.
    second, seen = run_reusing(reuse_in_background, [Program(INSPECT)])
    assert second[0].outcome == Outcome.EXITED and second[0].warm is True
    idle = b"[b'/usr/local/libexec/crucible-helper idle']\n"  # the idle main process only
    assert seen == idle + b"{'/tmp': [], '/output': [], '/dev/shm': [], '/sandbox': ['main.py']}\n"
    pool.wait_for_handovers(reuse_in_background.owner, 60, abandon=False)
    assert len(pool.idle(reuse_in_background.owner)) == 1


def test_a_sandbox_that_does_not_verify_clean_in_the_background_is_discarded(reuse_in_background):
    shm = b"import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget(0, 4096, 0o1000 | 0o600) >= 0\n"
    results, _ = run_reusing(reuse_in_background, [Program(shm)])
    assert results[0].exit_code == 0
    second, seen = run_reusing(reuse_in_background, [Program(b"print('fresh')")])
    assert second[0].warm is False and seen == b"fresh\n"


def ended_exec(sandbox, exec_id: str) -> dict:
    """The engine's view of an exec once it has ended (within a few seconds)."""
    for _ in range(100):
        state = sandbox.api.exec_inspect(exec_id)
        if not state["Running"]:
            return state
        time.sleep(0.05)
    return state


def test_the_next_sample_runs_in_the_launcher_started_ahead_on_the_clean_sandbox(reuse_in_background):
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    request = RunRequest(
        run_id=str(uuid.uuid4()), runtime=runtime_for("python"), code=b"", stdin=b"", limits=small_limits()
    )
    sandbox = pool.claim(
        reuse_in_background.owner,
        runner.profile_for(request),
        request.run_id,
        key=pool.reuse_key(runner.profile_for(request), reuse_in_background.group),
    )
    try:
        ahead = sandbox.prestarted
        assert ahead is not None
        output = []
        request = replace(request, code=b"print('bob')\n")
        result = execute(sandbox, request, on_output=lambda s, d: output.append(d), control=lambda: None)
        assert result.outcome == Outcome.EXITED and b"".join(output) == b"bob\n"
        # The exec started ahead ran the program (exit 0); one left unused would have exited 125 (no payload).
        # The run ended at the trailer: the launcher that wrote it may take a moment more to exit.
        assert sandbox.prestarted is None and ended_exec(sandbox, ahead.exec_id)["ExitCode"] == 0
    finally:
        sandbox.remove()


def test_a_launcher_started_ahead_for_another_program_is_not_used(reuse_in_background):
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    request = RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_for("python"),
        code=b"import os\nprint(os.environ.get('WHO'))\n",
        stdin=b"",
        env={"WHO": "bob"},
        limits=small_limits(),
    )
    profile = runner.profile_for(request)
    sandbox = pool.claim(
        reuse_in_background.owner, profile, request.run_id, key=pool.reuse_key(profile, reuse_in_background.group)
    )
    try:
        ahead = sandbox.prestarted
        assert ahead is not None
        output = []
        result = execute(sandbox, request, on_output=lambda s, d: output.append(d), control=lambda: None)
        assert result.outcome == Outcome.EXITED and b"".join(output) == b"bob\n"
        assert sandbox.prestarted is None and ended_exec(sandbox, ahead.exec_id)["ExitCode"] != 0
    finally:
        sandbox.remove()
