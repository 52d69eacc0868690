"""The interpreter a reused sandbox starts ahead of its next Python sample (``SANDBOX_PRESTART``): the
sample sees what it would see in a fresh sandbox, finds nothing of the platform, and each interpreter
serves one sample at most."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

import pytest

from apps.sandboxing import helper, pool
from apps.sandboxing.outcomes import Outcome, RunRequest, RunResult
from apps.sandboxing.policy import runtime_for
from apps.sandboxing.pool import remove_pools_of
from apps.sandboxing.runner import Program, Reuse, run_programs
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker


@dataclass
class Sample:
    result: RunResult
    stdout: bytes
    stderr: bytes


@pytest.fixture
def batch():
    """Alice's batch: each sample a request of its own, handed the sandbox of the one before it."""
    owner = f"test-prestart-{uuid.uuid4().hex[:8]}"
    yield Reuse(owner=owner, group=str(uuid.uuid4()), background=True)
    pool.wait_for_handovers(owner, 60)
    remove_pools_of(owner)


def run_sample(batch, code: bytes, stdin: bytes = b"", args: tuple[str, ...] = (), language="python") -> Sample:
    output: list[tuple[str, bytes]] = []
    request = RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_for(language),
        code=b"",
        stdin=b"",
        limits=small_limits(),
        args=args,
    )
    (result,) = run_programs(
        request, [Program(code, stdin)], on_output=lambda s, d: output.append((s, d)), control=lambda: None, reuse=batch
    )
    stdout, stderr = (b"".join(d for s, d in output if s == stream) for stream in ("stdout", "stderr"))
    return Sample(result, stdout, stderr)


def settle(batch, pause_s: float = 0.0) -> None:
    """The last sample's sandbox reset and its next interpreter started; then ``pause_s`` more."""
    pool.wait_for_handovers(batch.owner, 60, abandon=False)
    time.sleep(pause_s)


PROBE = b"""import os, stat, sys, signal
print("argv", sys.argv, "file", __file__, "name", __name__, "path0", sys.path[0], "cwd", os.getcwd())
print("main", sorted(globals()), type(__loader__).__name__, __spec__, __package__)
info = os.fstat(0)
print("stdin", repr(sys.stdin.read()), sys.stdin.seekable(), stat.S_ISREG(info.st_mode), stat.S_ISCHR(info.st_mode))
print("stdin object", sys.stdin is sys.__stdin__, sys.stdin.name, sys.stdin.mode, sys.stdin.encoding, sys.stdin.errors,
      sys.stdin.line_buffering, sys.stdin.write_through, sys.stdin.buffer.raw.name, sys.stdin.buffer.raw.closefd)
print("modules", sorted(sys.modules))
print("importers", sorted(sys.path_importer_cache))
print("options", sys.orig_argv, sys._xoptions, sys.flags, sys.warnoptions)
print("fds", sorted(os.listdir("/proc/self/fd")))
print("environ", sorted(os.environ.items()))
print("signals", [signal.getsignal(s) for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT,
      signal.SIGHUP, signal.SIGCHLD)], signal.pthread_sigmask(signal.SIG_BLOCK, []))
print("session", os.getsid(0) == os.getsid(os.getppid()), os.getpgrp() == os.getpgid(os.getppid()))
print("status", sorted(line for line in open("/proc/self/status") if line.startswith(("NoNewPrivs", "Seccomp", "Cap"))))
import resource
print("limits", [resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")])
sys.stdout.flush()
raise ValueError("boom")
"""

RAISED_AT = PROBE.count(b"\n")  # its last line
TRACEBACK = b'Traceback (most recent call last):\n  File "/sandbox/main.py", line %d, in <module>\n' % RAISED_AT
TRACEBACK += b'    raise ValueError("boom")\nValueError: boom\n'


@pytest.mark.parametrize("stdin", [b"from alice\nsecond line\n", b""], ids=["stdin", "no-stdin"])
def test_a_python_sample_on_a_reused_sandbox_sees_what_it_sees_in_a_fresh_one(batch, stdin):
    args = ("--name", "alice smith", "")
    fresh = run_sample(batch, PROBE, stdin, args)
    settle(batch)
    reused = run_sample(batch, PROBE, stdin, args)
    assert fresh.result.warm is False and reused.result.warm is True
    for sample in (fresh, reused):
        assert sample.result.outcome == Outcome.EXITED and sample.result.exit_code == 1
        assert sample.stderr == TRACEBACK
    assert reused.stdout.decode() == fresh.stdout.decode()
    assert b"argv ['/sandbox/main.py', '--name', 'alice smith', '']" in reused.stdout
    assert b"crucible" not in reused.stdout


AGE = b"""import os, time
started = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
process_age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
code_age = time.time() - os.stat(__file__).st_mtime
print("started ahead" if process_age - code_age > 0.5 else "started with its code")
"""


def test_the_next_python_sample_runs_in_an_interpreter_started_before_its_code_arrived(batch):
    assert run_sample(batch, AGE).stdout == b"started with its code\n"
    settle(batch, pause_s=1.0)
    assert run_sample(batch, AGE).stdout == b"started ahead\n"


def test_without_prestart_every_interpreter_starts_with_its_code(batch, settings):
    settings.SANDBOX_PRESTART = False
    run_sample(batch, AGE)
    settle(batch, pause_s=1.0)
    second = run_sample(batch, AGE)
    assert second.result.warm is True and second.stdout == b"started with its code\n"


def test_a_sample_launched_otherwise_than_the_last_gets_no_interpreter_started_ahead(batch):
    run_sample(batch, AGE)
    settle(batch, pause_s=1.0)
    other_args = run_sample(batch, AGE, args=("other",))
    assert other_args.result.warm is True and other_args.stdout == b"started with its code\n"
    settle(batch)
    listing = b"for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | sort\n"
    bash = run_sample(batch, listing, language="bash")
    assert bash.result.warm is True and bash.result.exit_code == 0
    assert b"python3" not in bash.stdout  # the interpreter started for the python sample was killed
    settle(batch, pause_s=1.0)
    assert run_sample(batch, AGE).stdout == b"started with its code\n"  # nothing started ahead for bash


def test_an_interpreter_started_ahead_runs_one_sample_only(batch):
    code = b"import builtins, os\nprint(getattr(builtins, 'seen_by', None), os.getpid())\nbuiltins.seen_by = 'me'\n"
    samples = []
    for _ in range(4):
        samples.append(run_sample(batch, code))
        settle(batch)
    assert [sample.result.warm for sample in samples] == [False, True, True, True]
    assert all(sample.stdout.startswith(b"None ") for sample in samples)
    assert len({sample.stdout for sample in samples}) == 4


def test_a_sample_that_kills_its_interpreter_at_once_ends_as_killed_and_the_next_runs(batch):
    run_sample(batch, b"print(1)")
    settle(batch)
    killed = run_sample(batch, b"import os\nos.kill(os.getpid(), 9)\n")
    assert killed.result.warm is True and killed.result.outcome == Outcome.EXITED
    assert killed.result.exit_code == 137 and killed.result.signal == 9
    settle(batch)
    after = run_sample(batch, b"import sys\nprint(sys.stdin.read())\n", b"from bob")
    assert after.result.warm is True and after.result.exit_code == 0 and after.stdout == b"from bob\n"


MARK = bytes.fromhex("9c1d7e42a55a3cc3")  # how every nonce of the test starts

SCAN = b"""import gc, os, sys
halves, hexes = (bytes.fromhex("9c1d7e42"), bytes.fromhex("a55a3cc3")), (b"9c1d7e42", b"a55a3cc3")
def hits(data):
    found = 0
    for first, second in (halves, hexes):
        at = data.find(first)
        while at >= 0:
            found += data[at + 4 : at + 4 + len(second)] == second
            at = data.find(first, at + 1)
    return found
found = hits(open("/proc/self/environ", "rb").read()) + hits(open("/proc/self/cmdline", "rb").read())
scanned = 0
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps.read().splitlines():
        addresses, perms = line.split()[:2]
        start, end = (int(x, 16) for x in addresses.split("-"))
        if perms.startswith("r") and end - start < 1 << 30:
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            scanned += len(data)
            found += hits(data)
print("nonces found", found, "scanned enough", scanned > 4 << 20)
left = [o for o in gc.get_objects() if getattr(o, "__module__", None) == "crucible_prestart"
        or isinstance(o, dict) and o.get("__name__") == "crucible_prestart"]
print("start-up ahead", "crucible_prestart" in sys.modules, sys._xoptions, sys.orig_argv, left)
print("fds", sorted(os.listdir("/proc/self/fd")))
"""


def test_a_sample_finds_no_nonce_and_nothing_of_the_start_up_ahead_in_its_process(batch, monkeypatch):
    real = secrets.token_bytes

    def token_bytes(count=None):
        return MARK + real(count - len(MARK)) if count == helper.NONCE_BYTES else real(count)

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    fresh = run_sample(batch, SCAN)
    settle(batch)
    reused = run_sample(batch, SCAN)
    assert reused.result.warm is True and reused.result.exit_code == 0
    assert reused.stdout.startswith(b"nonces found 0 scanned enough True\n")
    assert b"start-up ahead False {} ['python3', '-u', '/sandbox/main.py'] []\n" in reused.stdout
    assert reused.stdout == fresh.stdout
