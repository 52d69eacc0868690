"""The runner's contract: exit codes, stdin, separate streams, order, limits, control, cleanup."""

import hashlib
import threading

import pytest

from apps.sandboxing import containers, engine, runner
from apps.sandboxing.outcomes import Command, Failure, Outcome
from apps.sandboxing.policy import Limits, Profile, Runtime, container_config, runtime_for
from apps.sandboxing.tests.conftest import SLACK_S, execute, small_limits, under_gvisor

pytestmark = pytest.mark.docker


def test_a_program_that_succeeds_exits_with_code_zero():
    run = execute("print('hello')")
    assert run.result.outcome is Outcome.EXITED
    assert run.result.exit_code == 0
    assert run.result.signal is None
    assert run.stdout == b"hello\n"
    assert (run.result.failure, run.result.error) == (None, "")


def test_the_exit_code_of_the_program_is_reported():
    run = execute("import sys; sys.exit(3)")
    assert (run.result.outcome, run.result.exit_code) == ("exited", 3)


def test_stdin_is_delivered_to_the_program_byte_for_byte():
    data = bytes(range(256)) * 100
    run = execute("import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())", stdin=data)
    assert run.text.strip() == hashlib.sha256(data).hexdigest()


def test_empty_stdin_reads_as_end_of_file_at_once():
    run = execute("import sys; print(repr(sys.stdin.read()))")
    assert run.text.strip() == "''"
    assert run.result.outcome == "exited"


def test_stderr_is_kept_separate_from_stdout():
    run = execute("import sys; print('out'); print('err', file=sys.stderr)")
    assert run.stdout == b"out\n"
    assert run.stderr == b"err\n"


def test_output_arrives_in_the_order_it_was_written_across_both_streams():
    """The engine copies the two streams independently: writes 0.2 s apart arrive in order (0.05 s
    apart, one arrived out of order once on a loaded 2-core machine, under gVisor with a warm pool)."""
    code = "import sys, time\nfor i in range(6):\n    s = sys.stdout if i % 2 == 0 else sys.stderr\n"
    code += "    s.write(f'{i}\\n'); s.flush(); time.sleep(0.2)\n"
    run = execute(code)
    assert [(stream, data.strip()) for stream, data in run.chunks] == [
        ("stdout" if i % 2 == 0 else "stderr", str(i).encode()) for i in range(6)
    ]


def test_a_bash_script_runs_with_the_bash_runtime():
    run = execute("echo $((6 * 7)); exit 4", language="bash")
    assert run.stdout == b"42\n"
    assert run.result.exit_code == 4


def test_the_code_file_is_named_by_the_runtime_and_cannot_be_executed_directly():
    run = execute("import sys, os; print(sys.argv[0]); print(os.access(sys.argv[0], os.X_OK)); print(os.getcwd())")
    assert run.text.split() == ["/sandbox/main.py", "False", "/tmp"]


def test_a_busy_loop_times_out_at_the_limit_never_before_it():
    run = execute("while True: pass", timeout_s=2)
    assert run.result.outcome is Outcome.TIMED_OUT
    assert 2.0 <= run.result.duration_ms / 1000 < 2.0 + SLACK_S


def test_a_program_that_allocates_without_end_is_oom_killed():
    run = execute("x = []\nwhile True: x.append(bytearray(1 << 20))", memory_mb=48)
    assert run.result.outcome == "oom_killed"
    assert run.result.exit_code == 137
    assert run.result.peak_memory_bytes >= 40 * 1024 * 1024


def test_cancel_sends_sigterm_and_lets_the_program_clean_up():
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n    open('/output/partial.txt', 'w').write('saved'); print('bye', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    run = execute(
        code, control=lambda t, out: Command.CANCEL if b"ready" in out else None, timeout_s=10, kill_grace_s=2
    )
    assert run.result.outcome is Outcome.CANCELLED
    assert run.stdout == b"ready\nbye\n"
    assert run.result.exit_code == 0  # it ended by itself, within the grace, not by the SIGKILL after it
    assert [a.name for a in run.result.artifacts] == ["partial.txt"]


def test_cancel_kills_a_program_that_ignores_sigterm_after_the_grace():
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready')\ntime.sleep(60)\n"
    run = execute(code, control=lambda t, out: Command.CANCEL if out else None, timeout_s=30, kill_grace_s=1)
    assert run.result.outcome is Outcome.CANCELLED
    assert run.result.exit_code == 137
    assert 1.0 <= run.wall_s - run.first_command_at < 1.0 + SLACK_S  # the SIGKILL waited for the grace


def test_stop_kills_the_program_at_once_without_a_grace():
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(10)\nprint('still here')\n"
    )
    run = execute(
        code, control=lambda t, out: Command.STOP if out.endswith(b"\n") else None, timeout_s=60, kill_grace_s=30
    )
    assert run.result.outcome is Outcome.STOPPED
    assert run.result.exit_code == 137
    assert run.stdout == b"ready\n"  # killed before its next line, long before the 30 s grace


def test_an_answer_that_is_no_command_stops_the_program():
    """Fail closed: ``control()`` answering anything but None or a Command ends the run at once."""
    code = "import time; print('ready', flush=True); time.sleep(10); print('still here')"
    run = execute(code, control=lambda t, out: "safety_stop" if out.endswith(b"\n") else None, timeout_s=60)
    assert run.result.outcome is Outcome.STOPPED
    assert run.stdout == b"ready\n"


def test_control_is_asked_while_the_program_runs_not_only_before():
    code = "import time\nprint('ready', flush=True)\ntime.sleep(1.5)\nprint('done')\n"
    asked_while_running = []

    def control(_t, out):
        if out == b"ready\n":
            asked_while_running.append(1)
        return None

    run = execute(code, control=control)
    assert run.stdout == b"ready\ndone\n"
    assert len(asked_while_running) >= 2


def test_output_over_the_cap_keeps_exactly_the_cap_and_ends_the_run():
    run = execute("import sys\nwhile True: sys.stdout.write('x' * 1000)", output_cap_bytes=100_000)
    assert run.result.outcome == "output_capped"
    assert run.result.output_truncated is True
    assert run.result.output_bytes == 100_000
    assert len(run.stdout) + len(run.stderr) == 100_000


def test_output_of_exactly_the_cap_is_not_truncated():
    run = execute("import sys; sys.stdout.write('x' * 5000)", output_cap_bytes=5000)
    assert run.result.outcome == "exited"
    assert run.result.output_truncated is False
    assert len(run.stdout) == 5000


def test_the_cap_counts_both_streams_together():
    code = "import sys, time\nsys.stdout.write('o' * 30_000)\ntime.sleep(0.2)\nwhile True: sys.stderr.write('e' * 100)"
    run = execute(code, output_cap_bytes=50_000)
    assert run.result.outcome == "output_capped"
    assert run.stdout == b"o" * 30_000
    assert run.stderr == b"e" * 20_000


def test_resource_samples_arrive_at_most_once_a_second_and_peaks_are_recorded():
    run = execute("import time\nx = bytearray(20 << 20)\nt = time.time()\nwhile time.time() - t < 2.5: pass")
    assert len(run.samples) >= 1
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(run.samples, run.samples[1:], strict=False)]
    assert all(gap >= 0.99 for gap in gaps)
    assert all(s.pids >= 1 and s.memory_bytes > 0 for s in run.samples)
    assert max(s.cpu_percent for s in run.samples) > 5  # a busy loop; loose: the test host may be loaded
    assert run.result.peak_memory_bytes >= 20 << 20
    assert run.result.cpu_time_ms >= 300


def test_timings_and_the_image_actually_used_are_reported():
    run = execute("import time; time.sleep(0.3)")
    image = engine.client().images.get(runtime_for("python").image)
    assert run.result.image_id == image.id
    assert run.result.started_at <= run.result.finished_at
    assert 300 <= run.result.duration_ms <= run.wall_s * 1000  # the program's time, within the call's


def test_an_unknown_runtime_ends_in_error_and_is_never_retried_weaker(settings):
    settings.SANDBOX_RUNTIME = "no-such-runtime"
    run = execute("print('must not run')")
    assert (run.result.outcome, run.result.failure) == (Outcome.ERROR, Failure.SETUP_REFUSED)
    assert not run.result.failure.transient
    assert "runtime" in run.result.error.lower()
    assert run.chunks == []


def test_a_missing_image_ends_in_error():
    runtime = Runtime(image="crucible-sandbox:does-not-exist", command=["python3", "{file}"], file_name="main.py")
    run = execute("print(1)", runtime=runtime)
    assert (run.result.outcome, run.result.failure) == (Outcome.ERROR, Failure.SETUP_REFUSED)
    assert "image" in run.result.error.lower()


def test_a_launcher_that_cannot_write_the_code_file_is_a_launcher_failure():
    """Code larger than the /sandbox tmpfs: the launcher fails before the program starts."""
    run = execute(b"#" * (8 << 20))
    assert (run.result.outcome, run.result.failure) == (Outcome.ERROR, Failure.LAUNCHER)
    assert "launcher" in run.result.error
    assert run.chunks == []


def test_a_command_that_does_not_exist_exits_127():
    runtime = Runtime(image=runtime_for("python").image, command=["no-such-binary", "{file}"], file_name="main.x")
    run = execute("x", runtime=runtime)
    assert (run.result.outcome, run.result.exit_code) == ("exited", 127)
    assert b"no-such-binary" in run.stderr


def test_the_container_is_removed_even_when_a_callback_raises():
    def explode(_stream, _data):
        raise RuntimeError("storage is down")

    run = execute("print('x')", on_output=explode)
    assert (run.result.outcome, run.result.failure) == (Outcome.ERROR, Failure.ENGINE_FAULT)
    assert "storage is down" in run.result.error
    # the autouse fixture asserts no container is left


def test_a_cancel_before_the_start_never_runs_the_program():
    run = execute("print('ran')", control=lambda t, out: Command.CANCEL)
    assert (run.result.outcome, run.result.failure) == (Outcome.CANCELLED, None)
    assert run.chunks == []


def test_the_policy_has_no_opt_out():
    config = container_config(Profile(image="img", limits=small_limits()), name="x", run_id="x")
    assert config["network_mode"] == "none"
    assert config["read_only"] is True
    assert config["cap_drop"] == ["ALL"]
    assert config["user"] == "10001:10001"
    assert config["mem_limit"] == config["memswap_limit"]
    assert config["init"] is True
    assert config["log_config"]["Type"] == "none"
    assert any(opt.startswith("seccomp=") for opt in config["security_opt"])
    assert "no-new-privileges:true" in config["security_opt"]
    assert config["volumes"] == {} and config["mounts"] == []
    assert set(config["environment"]) == {"PATH", "HOME", "LANG", "CRUCIBLE_OUTPUT_DIR"}
    assert all("noexec" in options and "nr_inodes" in options for options in config["tmpfs"].values())


def test_the_limits_applied_by_the_engine_match_the_request():
    code = (
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], resource.getrlimit(resource.RLIMIT_FSIZE)[0])\n"
        "print(resource.getrlimit(resource.RLIMIT_NPROC)[0])\n"
        "for p in ('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max'):\n"
        "    try: print(open(p).read().strip()); break\n"
        "    except OSError: pass\n"
    )
    run = execute(code, nofile=100, fsize_mb=3, pids=40)
    nofile, fsize, nproc, *pids_max = run.text.split()
    assert (nofile, fsize) == ("100", str(3 * 1024 * 1024))
    if under_gvisor():
        assert nproc == "40"  # gVisor's kernel counts the program's processes
    else:
        assert pids_max == ["40"]  # the pids cgroup does; RLIMIT_NPROC would count host-wide


def test_output_is_delivered_on_the_calling_thread_and_no_thread_is_started():
    before = set(threading.enumerate())
    seen = []

    def on_output(_stream, _data):
        seen.append((threading.get_ident(), set(threading.enumerate())))

    execute("import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.1)\n", on_output=on_output)
    assert seen
    assert all(ident == threading.get_ident() for ident, _ in seen)
    assert all(threads == before for _, threads in seen)
    assert set(threading.enumerate()) == before


def test_on_result_sees_the_verdict_before_the_container_is_removed():
    seen = {}

    def on_result(result):
        seen["outcome"] = result.outcome
        seen["container_still_there"] = any(
            run == "on-result-probe" for _, run in containers.list_instance_containers()
        )

    request = runner.RunRequest(
        run_id="on-result-probe",
        runtime=runtime_for("python"),
        code=b"print(1)",
        stdin=b"",
        limits=Limits.from_settings(timeout_s=5),
    )
    result = runner.run(request, on_output=lambda s, d: None, control=lambda: None, on_result=on_result)
    assert result.outcome == seen["outcome"] == "exited"
    assert seen["container_still_there"] is True
    assert not any(run == "on-result-probe" for _, run in containers.list_instance_containers())


def test_output_written_just_before_an_immediate_exit_is_never_lost():
    # Many short runs: the last bytes come through the engine after it already reports the exit.
    for i in range(5):
        run = execute(f"import os, sys; sys.stderr.write('last words {i}'); os._exit(7)")
        assert (run.result.exit_code, run.stderr) == (7, f"last words {i}".encode())


def test_a_child_left_holding_the_output_open_does_not_keep_the_run_going():
    code = "import subprocess; subprocess.Popen(['sleep', '30']); print('parent done', flush=True)"
    run = execute(code, timeout_s=20)
    assert run.result.outcome is Outcome.EXITED
    assert (run.result.exit_code, run.stdout) == (0, b"parent done\n")
    assert run.result.duration_ms < 10_000  # ended at the parent's exit plus the drain, not the child's 30 s
