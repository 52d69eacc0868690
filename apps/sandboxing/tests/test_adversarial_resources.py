"""Adversarial cases 1-9 (resource exhaustion) of shared/security/adversarial-cases.md, at the runner level."""

import tracemalloc
import uuid
from pathlib import Path

import pytest

from apps.sandboxing.outcomes import Command, Outcome
from apps.sandboxing.tests.conftest import SLACK_S, execute, under_gvisor

pytestmark = pytest.mark.docker


def assert_timed_out_at(run, timeout_s: float) -> None:
    """Ended by the wall-clock limit: not before it, and within a bounded slack after it."""
    assert run.result.outcome is Outcome.TIMED_OUT
    assert timeout_s <= run.result.duration_ms / 1000 < timeout_s + SLACK_S


def assert_host_unaffected():
    """Another evaluation runs normally right after."""
    run = execute("print(6 * 7)")
    assert (run.result.outcome, run.result.exit_code, run.stdout) == ("exited", 0, b"42\n")


def execute_counting_output(code: str, **options):
    """Run ``code`` keeping no output, only counting the bytes delivered; return (run, bytes, peak
    bytes this process allocated meanwhile): the worker side must stay bounded whatever the program writes."""
    received = 0

    def count(_stream, data):
        nonlocal received
        received += len(data)

    tracemalloc.start()
    try:
        run = execute(code, keep_output=False, on_output=count, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return run, received, peak


def host_processes_containing(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# 1
def test_a_python_fork_bomb_hits_the_pids_limit_and_the_host_is_unaffected():
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"
    run = execute(code, timeout_s=2, pids=32, memory_mb=512)  # under gVisor each process costs kernel memory
    assert run.result.outcome in ("exited", "timed_out")
    assert run.result.exit_code != 0
    assert_host_unaffected()


def test_a_shell_fork_bomb_hits_the_pids_limit_and_the_host_is_unaffected():
    run = execute(":(){ :|:& };:\nwait", language="bash", timeout_s=2, pids=32, memory_mb=512)
    assert run.result.outcome in ("exited", "timed_out")
    assert_host_unaffected()


def test_the_pids_limit_is_what_stops_a_fork_bomb():
    code = (
        "import os, errno\nn = 0\n"
        "while True:\n"
        "    try:\n        pid = os.fork()\n"
        "    except OSError as e:\n        print('fork failed', errno.errorcode[e.errno], n, flush=True); os._exit(1)\n"
        "    if pid == 0:\n        import time; time.sleep(30)\n"
        "    n += 1\n"
    )
    # Memory to spare: under gVisor each process also costs its kernel memory inside the limit.
    run = execute(code, timeout_s=3, pids=24, memory_mb=512)
    assert run.text.startswith("fork failed EAGAIN")
    assert int(run.text.split()[3]) < 24


# 2
def test_allocating_memory_until_it_dies_ends_oom_killed():
    run = execute("s = 'x'\nwhile True: s += s", memory_mb=48)
    assert run.result.outcome == "oom_killed"
    assert_host_unaffected()


# 3
def test_spinning_the_cpu_forever_times_out_at_the_wall_clock_limit():
    run = execute("while True: pass", timeout_s=2)
    assert_timed_out_at(run, 2)


def test_sixteen_spinning_threads_time_out_at_the_wall_clock_limit():
    code = "import threading\ndef spin():\n    while True: pass\n"
    code += "for _ in range(16): threading.Thread(target=spin, daemon=True).start()\nspin()\n"
    run = execute(code, timeout_s=2, cpus=0.5)
    assert_timed_out_at(run, 2)


# 4
def test_sleeping_forever_times_out():
    run = execute("import time; time.sleep(10**6)", timeout_s=2)
    assert_timed_out_at(run, 2)


def test_reading_stdin_sees_end_of_file_never_the_workers_stdin():
    code = "import os, sys\nprint(repr(sys.stdin.buffer.read()), os.readlink('/proc/self/fd/0'))"
    run = execute(code)
    assert run.text.split() == ["b''", "/dev/null"]


def test_blocking_on_stdin_forever_times_out():
    code = "import sys, time\nwhile True:\n    sys.stdin.buffer.read()\n    time.sleep(0.01)\n"
    run = execute(code, timeout_s=2)
    assert run.result.outcome == "timed_out"


# 5
def test_printing_forever_keeps_at_most_the_cap_and_the_worker_memory_stays_bounded():
    run, received, peak = execute_counting_output(
        "import os\nwhile True: os.write(1, b'y\\n' * 32768)", output_cap_bytes=1 << 20, timeout_s=10
    )
    assert run.result.outcome == "output_capped"
    assert run.result.output_truncated
    assert received == run.result.output_bytes == 1 << 20
    assert peak < 2 * 1024 * 1024
    assert_host_unaffected()


# 6
def test_one_100_mb_line_without_a_newline_is_capped_without_waiting_for_a_newline():
    run, received, peak = execute_counting_output(
        # Every byte, however many each write takes (gVisor's pipes take 64 KiB at a time).
        "import os\ndata = memoryview(b'a' * (100 * 1024 * 1024))\nwhile data:\n    data = data[os.write(1, data) :]",
        output_cap_bytes=1 << 20,
        memory_mb=256,
        timeout_s=10,
    )
    assert run.result.outcome is Outcome.OUTPUT_CAPPED  # as the bytes came, not at the 10 s timeout
    assert received == 1 << 20
    assert peak < 4 * 1024 * 1024  # far below the 100 MB the program wrote


# 7
def test_filling_tmp_with_one_big_file_fails_at_the_size_cap():
    code = (
        "import errno\nf = open('/tmp/big', 'wb')\nwritten = 0\n"
        "try:\n    while True:\n        f.write(b'\\0' * (1 << 20)); f.flush(); written += 1\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno], written)\n"
    )
    run = execute(code, tmpfs_mb=8, fsize_mb=64, memory_mb=64)
    code_name, mb = run.text.split()
    assert code_name == "ENOSPC"
    assert int(mb) <= 8


def test_a_file_larger_than_the_fsize_limit_cannot_be_written():
    code = (
        "import errno\nf = open('/tmp/big', 'wb', buffering=0)\n"
        "try:\n    for _ in range(8): f.write(b'\\0' * (1 << 20))\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    run = execute(code, tmpfs_mb=16, fsize_mb=4)
    assert run.text.strip() == "EFBIG"


def test_filling_tmp_with_100000_small_files_fails_at_the_inode_cap():
    code = (
        "import errno\nn = 0\n"
        "try:\n    while n < 100000:\n        open(f'/tmp/f{n}', 'w').close(); n += 1\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno], n)\n"
    )
    run = execute(code, tmpfs_inodes=500, timeout_s=10, memory_mb=64)
    if under_gvisor():
        # gVisor's tmpfs ignores nr_inodes: its files live in the sandbox's memory, so the memory
        # limit (or the timeout) is what ends the program, and the host's disk is never touched.
        assert run.result.outcome in ("oom_killed", "timed_out")
        assert_host_unaffected()
        return
    code_name, count = run.text.split()
    assert code_name == "ENOSPC"
    assert int(count) < 500


# 8
def test_a_child_that_ignores_sigterm_and_setsids_away_does_not_survive_the_run():
    token = f"crucible-survivor-{uuid.uuid4().hex}"
    code = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"    os.execvp('bash', ['bash', '-c', 'trap \"\" TERM; while true; do sleep 1; done', '{token}'])\n"
        "time.sleep(0.5)\nprint('parent exits')\n"
    )
    run = execute(code, control=lambda t, out: Command.CANCEL if out else None, timeout_s=5, kill_grace_s=0.5)
    assert run.result.outcome in ("exited", "cancelled")
    assert host_processes_containing(token) == []


def test_a_detached_child_holding_stdout_does_not_keep_the_run_alive():
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    run = execute(code, timeout_s=10)
    assert (run.result.outcome, run.result.exit_code) == ("exited", 0)  # at the parent's exit, not the timeout
    assert run.stdout == b"parent done\n"


# 9
def test_closing_stdout_and_stderr_early_then_exiting_reports_the_exit():
    code = "import os, sys, time\nprint('bye', flush=True)\nos.close(1); os.close(2)\ntime.sleep(1)\nsys.exit(5)\n"
    run = execute(code, timeout_s=10)
    assert (run.result.outcome, run.result.exit_code) == ("exited", 5)
    assert run.stdout == b"bye\n"
    assert run.result.duration_ms >= 1000  # the run waited for the exit, not for the end of the output


def test_closing_stdout_and_stderr_early_then_running_forever_times_out():
    code = "import os, time\nos.close(1); os.close(2)\nwhile True: time.sleep(1)\n"
    run = execute(code, timeout_s=2)
    assert_timed_out_at(run, 2)  # closing its output did not end the run
    assert run.chunks == []
