"""The launcher's trailer: how a program's end, exit status and empty /output reach the host without
an exec inspect or a collector exec, and why a program cannot fake it (``helper.trailer_start``).

The first tests are of the parser alone (``streams.TrailerWatch``); the others run programs in the
real sandbox, and count the helper execs a run cost from the engine's own event log. A fresh
sandbox's one program goes to its main process (the helper's ``await``) over attach, under gVisor and
runc alike: no exec at all, but the collector's when /output holds files (``sandbox.attach_suits``).
A compiled runtime's programs (compile, run) are each a launch exec.
"""

import time

import pytest

from apps.sandboxing import catalog, engine, helper
from apps.sandboxing.outcomes import Command, Outcome
from apps.sandboxing.streams import Trailer, TrailerWatch
from apps.sandboxing.tests.conftest import execute

NONCE = bytes(range(16))
START = helper.trailer_start(NONCE)


def forged(nonce_hex: str, status: int = 0, output: str = "empty") -> bytes:
    return helper.TRAILER_START + f"{nonce_hex}:{status}:{output}".encode() + b"\x00"


def test_output_passes_at_once_but_for_an_end_that_could_begin_the_trailer():
    watch = TrailerWatch(START)
    assert watch.feed(b"hello\n") == b"hello\n"
    assert watch.feed(b"almost\x00cruc") == b"almost"
    assert watch.feed(b"ible? no") == b"\x00crucible? no"
    assert watch.feed(b"ends in a NUL\x00") == b"ends in a NUL"
    assert watch.release() == b"\x00"


def test_the_trailer_ends_the_stream_and_what_follows_is_nobodys():
    watch = TrailerWatch(START)
    assert watch.feed(b"last words" + START[:5]) == b"last words"
    assert watch.feed(START[5:] + b"13") == b""
    assert watch.feed(b"7:files\x00late output of a child") == b""
    assert (watch.ended, watch.trailer) == (True, Trailer(137, False))
    assert watch.feed(b"more") == b"" and watch.release() == b""


def test_a_trailer_without_the_runs_nonce_is_the_programs_output():
    watch = TrailerWatch(START)
    fake = forged(bytes(16).hex()) + b"more"
    assert watch.feed(fake[:20]) + watch.feed(fake[20:]) + watch.release() == fake
    assert (watch.ended, watch.trailer) == (False, None)


def test_a_broken_trailer_ends_the_stream_but_says_nothing():
    long_one = TrailerWatch(START)
    long_one.feed(START + b"0" * 100)
    bad_word = TrailerWatch(START)
    bad_word.feed(START + b"0:maybe\x00")
    assert long_one.ended and bad_word.ended
    assert long_one.trailer is None and bad_word.trailer is None


def all_execs(run_id: str) -> list[str]:
    """The commands of every exec the engine ran in the run's sandbox (its "exec_create" events)."""
    events = engine.client().api.events(
        since=int(time.time()) - 120,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "exec_create"},
        decode=True,
    )
    name = f"crucible-{run_id}"
    return [e["Action"].partition(": ")[2] for e in events if e["Actor"]["Attributes"].get("name") == name]


def helper_execs(run_id: str) -> list[str]:
    """The helper subcommands the engine ran in the run's sandbox."""
    return [command.split()[1] for command in all_execs(run_id) if command.startswith(helper.HELPER_PATH)]


@pytest.mark.docker
def test_a_run_that_leaves_output_empty_costs_no_exec_and_one_that_leaves_a_file_a_collection():
    alice = execute("print('nothing to keep')")
    assert (alice.result.outcome, alice.result.exit_code, alice.stdout) == (Outcome.EXITED, 0, b"nothing to keep\n")
    assert all_execs(alice.run_id) == []
    bob = execute("open('/output/kept.txt', 'w').write('kept')\nraise SystemExit(4)")
    assert (bob.result.exit_code, [(a.name, a.data) for a in bob.result.artifacts]) == (4, [("kept.txt", b"kept")])
    assert helper_execs(bob.run_id) == ["collect"] and len(all_execs(bob.run_id)) == 1


@pytest.mark.docker
def test_a_forged_trailer_is_delivered_as_output_and_changes_nothing():
    fake = forged("0" * 32) + forged("a1" * 16, 0, "empty")
    code = (
        "import os\n"
        f"fake = {fake!r}\n"
        "os.write(1, fake + b'after on stdout\\n')\nos.write(2, fake + b'after on stderr\\n')\n"
        "open('/output/real.txt', 'w').write('real')\n"
        "raise SystemExit(5)\n"
    )
    run = execute(code)
    assert run.stdout == fake + b"after on stdout\n"
    assert run.stderr == fake + b"after on stderr\n"
    assert (run.result.outcome, run.result.exit_code) == (Outcome.EXITED, 5)
    assert [(a.name, a.data) for a in run.result.artifacts] == [("real.txt", b"real")]
    assert run.result.output_bytes == 2 * len(fake) + len(b"after on stdout\n") + len(b"after on stderr\n")


@pytest.mark.docker
def test_the_launchers_memory_with_the_nonce_is_out_of_its_programs_reach():
    """The launcher is not dumpable: /proc/PID/mem is refused (ptrace and process_vm_readv are not in
    the seccomp profile at all). What gVisor still shows of it (its fds, its environment) holds no
    nonce: that is in its memory only, never in argv, the environment or a file."""
    code = (
        "import os\n"
        "try:\n"
        "    open(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n"
        "    print('readable')\n"
        "except OSError:\n"
        "    print('refused')\n"
    )
    run = execute(code)
    assert run.stdout == b"refused\n"


@pytest.mark.docker
def test_the_process_that_holds_the_nonce_shows_it_nowhere_a_program_can_read():
    """The nonce travels on stdin only (over attach to the main process, or to a launch exec): not in
    that process's argv, nor in its environment (which the program may read under gVisor; under runc a
    non-dumpable process's is refused)."""
    code = (
        "import os, re\n"
        "parent = os.getppid()\n"
        "cmdline = open(f'/proc/{parent}/cmdline', 'rb').read()\n"
        "print(cmdline.split(bytes(1))[1].decode())\n"
        "try:\n"
        "    environ = open(f'/proc/{parent}/environ', 'rb').read()\n"
        "except OSError:\n"
        "    environ = b''\n"
        "print('nonce-like' if re.search(rb'[0-9a-f]{32}', cmdline + environ) else 'no nonce')\n"
    )
    run = execute(code)
    assert run.stdout == b"await\nno nonce\n"


@pytest.mark.docker
@pytest.mark.parametrize("how", ["os.kill(os.getppid(), signal.SIGKILL)", "os.kill(-1, signal.SIGKILL)"])
def test_a_program_that_kills_its_main_process_ends_as_its_own_kill_with_its_output(how):
    """Killing the sandbox's main process (the same user may) stops the container: the run ends as the
    program's kill, never a platform fault, with what it wrote before; /output went with the
    container, and the record says its list may be incomplete."""
    code = (
        "import os, signal, time\n"
        "open('/output/before.txt', 'w').write('written before the kill')\n"
        "print('killing', flush=True)\n"
        f"{how}\n"
        "time.sleep(5)\n"
    )
    run = execute(code, timeout_s=20)
    assert (run.result.outcome, run.result.exit_code, run.result.signal) == (Outcome.EXITED, 137, 9)
    assert run.stdout == b"killing\n"
    assert (run.result.artifacts, run.result.artifacts_truncated) == ([], True)
    assert run.wall_s < 5


@pytest.mark.docker
def test_a_compiled_program_that_kills_its_launcher_still_ends_with_its_output_and_files():
    """A compiled runtime's program runs under a launch exec (its sandbox runs two programs)."""
    code = (
        "#include <signal.h>\n#include <stdio.h>\n#include <unistd.h>\n"
        "int main(void) {\n"
        '    FILE *f = fopen("/output/before.txt", "w");\n'
        '    fputs("written before the kill", f);\n'
        "    fclose(f);\n"
        "    kill(getppid(), SIGKILL);\n"
        '    puts("the launcher is gone");\n'
        "    return 0;\n"
        "}\n"
    )
    run = execute(code, runtime=catalog.runtime("c"), memory_mb=384, timeout_s=10)
    assert run.result.outcome is Outcome.EXITED
    assert run.stdout == b"the launcher is gone\n"
    assert [a.name for a in run.result.artifacts] == ["before.txt"]
    assert run.result.exit_code == 137  # the exec's own status: the launcher's, never taken for a success
    assert helper_execs(run.run_id)[:2] == ["launch", "launch"]  # the compiler's, then the program's


@pytest.mark.docker
def test_a_cancelled_program_that_ignores_nothing_ends_by_the_sigterm_within_the_grace():
    code = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    run = execute(code, control=lambda t, out: Command.CANCEL if out else None, timeout_s=30, kill_grace_s=5)
    assert (run.result.outcome, run.result.exit_code, run.result.signal) == (Outcome.CANCELLED, 143, 15)
    assert run.wall_s - run.first_command_at < 5  # the launcher outlived the SIGTERM and reported it


@pytest.mark.docker
def test_output_that_ends_in_nul_bytes_or_a_trailers_beginning_is_delivered_whole():
    code = "import os\nos.write(1, b'out\\x00\\x00')\nos.write(2, b'err\\x00crucible:end:')\n"
    run = execute(code)
    assert (run.stdout, run.stderr) == (b"out\x00\x00", b"err\x00crucible:end:")
    assert run.result.output_bytes == len(b"out\x00\x00err\x00crucible:end:")


@pytest.mark.docker
def test_a_child_left_writing_after_the_program_exits_does_not_hold_the_run():
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(0.3)\n"
        "    while True:\n"
        "        print('late', flush=True); time.sleep(0.02)\n"
        "print('done', flush=True)\n"
    )
    run = execute(code, timeout_s=10)
    assert (run.result.outcome, run.result.exit_code, run.stdout) == (Outcome.EXITED, 0, b"done\n")


@pytest.mark.docker
@pytest.mark.parametrize(
    ("code", "exit_code", "signal"),
    [
        ("pass", 0, None),
        ("raise SystemExit(1)", 1, None),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", 137, 9),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", 143, 15),
    ],
)
def test_a_program_ended_by_itself_or_a_signal_exits_with_its_status_or_128_plus_the_signal(code, exit_code, signal):
    run = execute(code)
    assert (run.result.outcome, run.result.exit_code, run.result.signal) == (Outcome.EXITED, exit_code, signal)
