"""A stop that keeps evidence (a safety rule, an emergency stop): the sandbox is frozen, its processes
are listed, /output is collected through the usual collector, then it is killed."""

import pytest

from apps.sandboxing.outcomes import Command, Outcome
from apps.sandboxing.tests.conftest import execute, under_gvisor

pytestmark = pytest.mark.docker

WRITE_THEN_WAIT = (
    "import time\n"
    "open('/output/report.txt', 'w').write('written before the stop')\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def stop_keeping_evidence_once_ready(_at, stdout):
    return Command.STOP_KEEPING_EVIDENCE if b"ready" in stdout else None


def test_files_written_before_a_stop_keeping_evidence_are_collected():
    run = execute(WRITE_THEN_WAIT, control=stop_keeping_evidence_once_ready, timeout_s=30)
    assert run.result.outcome is Outcome.STOPPED
    assert [(a.name, a.data) for a in run.result.artifacts] == [("report.txt", b"written before the stop")]
    evidence = run.result.evidence
    assert evidence.frozen and evidence.programs_killed and evidence.collected
    assert evidence.detail == ""


def test_the_process_view_at_the_freeze_names_the_program():
    code = "import subprocess\nsubprocess.Popen(['sleep', '50'])\n" + WRITE_THEN_WAIT
    run = execute(code, control=stop_keeping_evidence_once_ready, timeout_s=30)
    names = [process["name"] for process in run.result.evidence.processes]
    assert "sleep" in names
    assert any(name.startswith("python") for name in names)


def test_a_fork_bomb_stopped_keeping_evidence_still_gives_up_its_output_files():
    code = (
        "import os, time\n"
        "open('/output/before.txt', 'w').write('before the bomb')\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.01)\n"
    )
    # The default memory limit: under gVisor the whole sandbox shares one memory limit, and 32 Python
    # processes outgrow 64 MiB within half a second of the bomb's start, before any stop (README).
    run = execute(code, control=stop_keeping_evidence_once_ready, timeout_s=30, pids=32, memory_mb=256)
    assert run.result.outcome is Outcome.STOPPED
    evidence = run.result.evidence
    # Under gVisor the bomb is stopped by signal (runsc refuses to signal a paused sandbox); under runc
    # paused, or stopped by host signals when the freezer gives up under the bomb.
    assert evidence.frozen and evidence.frozen_by in (("sigstop",) if under_gvisor() else ("pause", "sigstop"))
    assert evidence.programs_killed and evidence.collected, evidence
    assert [(a.name, a.data) for a in run.result.artifacts] == [("before.txt", b"before the bomb")]


def test_a_fork_bomb_files_only_the_sandbox_user_may_read_are_kept_too():
    # It ignores SIGHUP too: the stop must not wake its stopped processes by orphaning their group.
    code = private_fork_bomb()
    run = execute(code, control=stop_keeping_evidence_once_ready, timeout_s=30, memory_mb=256)
    assert run.result.evidence.collected, run.result.evidence
    assert [(a.name, a.data) for a in run.result.artifacts] == [("private.txt", b"mine alone")]


def private_fork_bomb(*setup: str) -> str:
    """A fork bomb that ignores SIGHUP, writes a file only the sandbox user may read, then forks
    forever; ``setup`` runs first (e.g. a session of its own)."""
    return (
        "import os, signal\n"
        + "".join(f"{line}\n" for line in setup)
        + "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "fd = os.open('/output/private.txt', os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "os.write(fd, b'mine alone')\n"
        "os.close(fd)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )


# The program's first process waits while a child of it, in a session of its own, forks.
OWN_SESSION = ("child = os.fork()", "if child:", "    os.waitpid(child, 0)", "    raise SystemExit", "os.setsid()")
# Each process reaps its children the moment they die.
REAPING_AT_ONCE = ("signal.signal(signal.SIGCHLD, signal.SIG_IGN)",)
# A chain as deep as the process slots allow, each of its processes then a bomb of its own.
DEEP_CHAIN = (
    "while True:",
    "    try:",
    "        if os.fork():",
    "            break",
    "    except OSError:",
    "        break",
)


@pytest.mark.parametrize(
    "setup",
    [
        OWN_SESSION,
        REAPING_AT_ONCE,
        (*OWN_SESSION, *REAPING_AT_ONCE),
        (*REAPING_AT_ONCE, *DEEP_CHAIN),
    ],
    ids=["own-session", "children-reaped-at-once", "both", "deep-chain-reaping-at-once"],
)
def test_a_fork_bomb_that_rearranges_itself_is_kept_stopped_too(setup):
    run = execute(private_fork_bomb(*setup), control=stop_keeping_evidence_once_ready, timeout_s=30, memory_mb=256)
    assert run.result.outcome is Outcome.STOPPED, run.result
    assert run.result.evidence.collected, run.result.evidence
    assert [(a.name, a.data) for a in run.result.artifacts] == [("private.txt", b"mine alone")]


def test_a_plain_stop_still_kills_at_once_and_keeps_nothing():
    run = execute(WRITE_THEN_WAIT, control=lambda _at, out: Command.STOP if b"ready" in out else None, timeout_s=30)
    assert run.result.outcome is Outcome.STOPPED
    assert run.result.evidence is None
    assert run.result.artifacts == []


def test_samples_carry_the_process_names_now_and_then():
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(4)\n"
    run = execute(code, timeout_s=30)
    views = [sample.processes for sample in run.samples if sample.processes is not None]
    assert views, "at least one sample carries the process view"
    assert any("sleep" in names for names in views)
