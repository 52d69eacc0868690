"""Several programs for one request, each in its own fresh process, one after another in one sandbox
(a new sandbox after one was killed): how a sample is run under each of its tests."""

from __future__ import annotations

import time
import uuid

import pytest

from apps.sandboxing import catalog, containers, engine, pool, runner
from apps.sandboxing.outcomes import Command, Failure, Outcome, RunRequest
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
    assert pool.kept(reuse_in_background.owner) != [] and pool.idle(reuse_in_background.owner) == []


def test_a_sandbox_that_does_not_verify_clean_in_the_background_is_discarded(reuse_in_background):
    shm = b"import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget(0, 4096, 0o1000 | 0o600) >= 0\n"
    results, _ = run_reusing(reuse_in_background, [Program(shm)])
    assert results[0].exit_code == 0
    second, seen = run_reusing(reuse_in_background, [Program(b"print('fresh')")])
    assert second[0].warm is False and seen == b"fresh\n"


def exec_creations(container_id: str, since: float) -> int:
    """How many execs the engine created in the container since ``since`` (its event log)."""
    return engine_events(container_id, since, "exec_create")


def engine_events(container_id: str, since: float, event: str) -> int:
    """How many ``event`` events the engine logged for the container since ``since``."""
    events = engine.client().events(
        since=since,
        until=time.time() + 1,
        filters={"container": container_id, "event": event},
        decode=True,
    )
    return len(list(events))


def test_a_batch_never_renames_the_sandbox_it_hands_from_sample_to_sample(reuse_in_background):
    since = time.time() - 1
    for number in range(3):
        results, seen = run_reusing(reuse_in_background, [Program(f"print({number})".encode())])
        assert results[0].warm is (number > 0) and seen == f"{number}\n".encode()
    pool.wait_for_handovers(reuse_in_background.owner, 60, abandon=False)
    (container_id,) = pool.kept(reuse_in_background.owner)
    assert engine_events(container_id, since, "rename") == 0
    # It belongs to its worker, not to the first sample's run: the orphan sweep has nothing to go by.
    (run_id,) = [run for cid, run in containers.list_instance_containers() if cid == container_id]
    assert run_id.startswith("kept-")


def test_a_kept_sandbox_nobody_claims_expires_and_a_drain_removes_what_is_kept(reuse_in_background, settings):
    owner = reuse_in_background.owner
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    pool.wait_for_handovers(owner, 60, abandon=False)
    (kept,) = pool.kept(owner)
    settings.SANDBOX_REUSE_IDLE_S = 60
    pool.WarmPool(owner, 0, lambda: []).refill_once()  # what the worker's pool thread does each second
    assert pool.kept(owner) == [kept]  # kept for a minute: not yet
    settings.SANDBOX_REUSE_IDLE_S = 0.001
    pool.WarmPool(owner, 0, lambda: []).refill_once()
    assert pool.kept(owner) == [] and kept not in {cid for cid, _ in containers.list_instance_containers()}
    run_reusing(reuse_in_background, [Program(b"print(2)")])
    assert len(pool.kept(owner)) == 1
    pool.WarmPool(owner, 0, lambda: []).drain()
    assert pool.kept(owner) == []


def test_a_kept_sandbox_removed_under_its_worker_is_never_a_launcher_failure_and_is_not_used_again(
    reuse_in_background,
):
    owner = reuse_in_background.owner
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    pool.wait_for_handovers(owner, 60, abandon=False)
    (removed,) = pool.remove_kept(owner)  # as the reconciler does once it takes the worker for gone
    results, seen = run_reusing(reuse_in_background, [Program(b"print('fresh')")])
    result = results[0]
    # Its worker saw the hang-up (a fresh sandbox), or the engine's removal won the race: a platform
    # fault the evaluation runs again (a transient failure), never the program's or the launcher's.
    assert (result.outcome, result.warm, seen) == (Outcome.EXITED, False, b"fresh\n") or (
        result.outcome == Outcome.ERROR and result.failure == Failure.ENGINE_FAULT and result.failure.transient
    ), (result.outcome, result.failure, result.error)
    again, seen = run_reusing(reuse_in_background, [Program(b"print('again')")])
    assert again[0].outcome == Outcome.EXITED and seen == b"again\n"
    assert removed not in pool.kept(owner)


def claim_handed_over(reuse, request):
    profile = runner.profile_for(request)
    return pool.claim(reuse.owner, profile, request.run_id, key=pool.reuse_key(profile, reuse.group))


def test_a_batch_reuses_one_serve_exec_no_exec_per_sample(reuse_in_background):
    since = time.time() - 1
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    pool.wait_for_handovers(reuse_in_background.owner, 60, abandon=False)
    (container_id,) = pool.kept(reuse_in_background.owner)
    assert exec_creations(container_id, since) == 2  # the first sample's launcher, then the serve exec
    between = time.time()
    for number in range(3):
        results, seen = run_reusing(reuse_in_background, [Program(f"print({number} * 7)".encode())])
        assert results[0].warm is True and seen == f"{number * 7}\n".encode()
    pool.wait_for_handovers(reuse_in_background.owner, 60, abandon=False)
    assert pool.kept(reuse_in_background.owner) == [container_id]
    assert exec_creations(container_id, between - 1) == 0  # three samples and their resets: frames only


def test_a_sample_that_kills_its_serve_process_ends_as_a_kill_and_the_next_gets_a_fresh_sandbox(reuse_in_background):
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    killer = b"import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(0.2)\nprint('still here')\n"
    results, _ = run_reusing(reuse_in_background, [Program(killer)])
    assert results[0].warm is True and results[0].exit_code == 137 and results[0].signal == 9
    second, seen = run_reusing(reuse_in_background, [Program(INSPECT)])
    assert second[0].warm is False  # the sandbox whose serve exec died was discarded
    idle = b"[b'/usr/local/libexec/crucible-helper idle']\n"
    assert seen == idle + b"{'/tmp': [], '/output': [], '/dev/shm': [], '/sandbox': ['main.py']}\n"


FORGER = (
    b"import os, sys, time\n"
    b"fake = '\\0crucible:reset:' + '00' * 16 + ':ok\\0\\0crucible:go:' + 'ab' * 16 + '\\0'\n"
    b"fake += '\\0crucible:end:' + 'cd' * 16 + ':0:empty\\0'\n"
    b"for stream in (sys.stdout, sys.stderr):\n"
    b"    stream.write(fake)\n"
    b"    stream.flush()\n"
    b"if os.fork() == 0:\n"
    b"    os.setsid()\n"
    b"    for _ in range(2000):\n"
    b"        for stream in (sys.stdout, sys.stderr):\n"
    b"            stream.write('leftover ' + fake)\n"
    b"            stream.flush()\n"
    b"        time.sleep(0.005)\n"
    b"    os._exit(0)\n"
    b"time.sleep(0.1)\n"
)


def test_a_sample_that_forges_markers_and_replies_and_leaves_a_writer_has_no_effect_on_the_next(
    reuse_in_background,
):
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    results, _ = run_reusing(reuse_in_background, [Program(FORGER)])
    assert results[0].exit_code == 0
    output = []
    request = RunRequest(
        run_id=str(uuid.uuid4()), runtime=runtime_for("python"), code=b"", stdin=b"", limits=small_limits()
    )
    results = run_programs(
        request,
        [Program(b"import sys, time\nprint('clean')\nprint('err', file=sys.stderr)\ntime.sleep(0.3)\n")],
        on_output=lambda s, d: output.append((s, d)),
        control=lambda: None,
        reuse=reuse_in_background,
    )
    assert results[0].exit_code == 0 and results[0].outcome == Outcome.EXITED
    for stream, expected in (("stdout", b"clean\n"), ("stderr", b"err\n")):
        assert b"".join(data for s, data in output if s == stream) == expected


def test_a_sample_cannot_read_the_serve_process_memory_nor_anything_sent_to_it(reuse_in_background):
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    # A leftover that reads the serve process's stdin (gVisor lets the same user open /proc/PID/fd/0
    # of a non-dumpable process; Linux does not): it is killed before the trailer, before any frame.
    probe = (
        b"import os, sys\n"
        b"serve = os.getppid()\n"
        b"print(open(f'/proc/{serve}/comm').read().strip(), open(f'/proc/{serve}/cmdline', 'rb').read())\n"
        b"try:\n"
        b"    open(f'/proc/{serve}/mem', 'rb').read(1)\n"
        b"except OSError as exc:\n"
        b"    print('mem refused', type(exc).__name__)\n"
        b"sys.stdout.flush()\n"
        b"if os.fork() == 0:\n"
        b"    os.setsid()\n"
        b"    try:\n"
        b"        stolen = open(f'/proc/{serve}/fd/0', 'rb', buffering=0).read(4096)\n"
        b"        open('/tmp/stolen', 'wb').write(stolen)\n"
        b"    except OSError:\n"
        b"        pass\n"
        b"    os._exit(0)\n"
    )
    results, seen = run_reusing(reuse_in_background, [Program(probe)])
    assert results[0].warm is True and results[0].exit_code == 0
    assert (
        seen == b"crucible-helper b'/usr/local/libexec/crucible-helper\\x00serve\\x00'\nmem refused PermissionError\n"
    )
    # The reset's frame reached the serve process (the sandbox verified clean and was kept), and so
    # did the next program's.
    results, seen = run_reusing(reuse_in_background, [Program(b"import os\nprint(os.path.exists('/tmp/stolen'))\n")])
    assert results[0].warm is True and seen == b"False\n"


def test_a_served_program_gets_its_own_stdin_and_the_cancel_signals_at_their_default(reuse_in_background):
    run_reusing(reuse_in_background, [Program(b"print(1)")])
    code = (
        b"import os, signal, sys\nprint(sys.stdin.read())\nsys.stdout.flush()\nos.kill(os.getpid(), signal.SIGTERM)\n"
    )
    results, seen = run_reusing(reuse_in_background, [Program(code, b"from alice")])
    assert results[0].warm is True and seen == b"from alice\n"
    assert results[0].outcome == Outcome.EXITED and results[0].signal == 15


def test_a_compiled_sample_is_two_frames_on_the_serve_exec_compile_then_run(reuse_in_background):
    c = catalog.runtime("c")
    hello = b'#include <stdio.h>\nint main(void) { char s[32]; fgets(s, 32, stdin); printf("hi %s", s); }\n'
    for number, warm in ((1, False), (2, True), (3, True)):
        output: list[tuple[str, bytes]] = []
        request = RunRequest(
            run_id=str(uuid.uuid4()), runtime=c, code=b"", stdin=b"", limits=small_limits(timeout_s=30)
        )
        results = run_programs(
            request,
            [Program(hello, f"sample {number}\n".encode())],
            on_output=lambda s, d: output.append((s, d)),
            control=lambda: None,
            reuse=reuse_in_background,
        )
        assert results[0].outcome == Outcome.EXITED and results[0].exit_code == 0 and results[0].warm is warm
        assert b"".join(d for s, d in output if s == "stdout") == f"hi sample {number}\n".encode()


def the_request_profile():
    """The profile ``run_reusing``'s requests ask for (a pool kept warm for them)."""
    request = RunRequest(run_id="x", runtime=runtime_for("python"), code=b"", stdin=b"", limits=small_limits())
    return runner.profile_for(request)


def test_a_batchs_first_sample_takes_its_workers_warm_sandbox_and_the_pool_refills_once_the_batch_let_it_go(
    reuse_in_background, settings
):
    owner = reuse_in_background.owner
    warm = pool.WarmPool(owner, 1, lambda: [the_request_profile()])
    assert warm.refill_once() == 1
    (warm_id,) = pool.idle(owner)
    first, _ = run_reusing(reuse_in_background, [Program(LITTER)])
    assert first[0].outcome == Outcome.EXITED and first[0].warm is True  # no sandbox started for it
    pool.wait_for_handovers(owner, 60, abandon=False)
    assert pool.kept(owner) == [warm_id] and pool.idle(owner) == []
    # Kept under its worker's name, it belongs to no run: the orphan sweep has nothing to go by.
    (run_id,) = [run for cid, run in containers.list_instance_containers() if cid == warm_id]
    assert run_id.startswith("kept-")
    settings.SANDBOX_REUSE_IDLE_S = 60
    assert warm.refill_once() == 0  # it holds its place in the pool while the batch may use it
    second, seen = run_reusing(reuse_in_background, [Program(INSPECT)])
    assert second[0].warm is True
    assert seen.endswith(b"{'/tmp': [], '/output': [], '/dev/shm': [], '/sandbox': ['main.py']}\n")
    assert b"sleep" not in seen and b"python" not in seen.split(b"\n")[0]  # what the first left is gone
    pool.wait_for_handovers(owner, 60, abandon=False)
    settings.SANDBOX_REUSE_IDLE_S = 0.001  # the batch is done with it
    assert warm.refill_once() == 1
    assert pool.kept(owner) == [] and warm_id not in {cid for cid, _ in containers.list_instance_containers()}
    assert len(pool.idle(owner)) == 1


def test_a_forking_workers_batch_never_takes_a_warm_sandbox_it_would_park_by_name(reuse, settings):
    """Parked by rename and label, a warm sandbox would go back to the pool's fresh ones after a sample."""
    warm = pool.WarmPool(reuse.owner, 1, lambda: [the_request_profile()])
    warm.refill_once()
    (warm_id,) = pool.idle(reuse.owner)
    first, _ = run_reusing(reuse, [Program(b"print(1)")])
    assert first[0].warm is False
    assert warm_id in pool.idle(reuse.owner)  # still idle and fresh, never used
