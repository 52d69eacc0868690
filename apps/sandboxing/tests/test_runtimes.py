"""Every shipped language against the real engine: a hello world, a compile error, a runtime error,
a timeout and an out-of-memory kill each end as they should (run again under runc by ``make test``).

A runtime whose image setup builds (``"prebuilt": true`` in sandbox/runtimes.json) must be there;
the others are tested where an operator built them (``build_sandbox_image --runtime NAME``).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from apps.sandboxing import catalog
from apps.sandboxing.cgroups import CgroupReader
from apps.sandboxing.engine_runtime import is_gvisor
from apps.sandboxing.image import current_image
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import MIB, Profile
from apps.sandboxing.runner import Program, run_programs
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError
from apps.sandboxing.tests.conftest import execute, small_limits
from apps.sandboxing.tests.languages import HELLO, PROGRAMS, RUNTIME_ERROR_EXIT

# Room for a compiler or a virtual machine beside the program (the compile step shares it).
ROOMY_MB = 384
COMPILED = [name for name in PROGRAMS if catalog.definition(name).compiled]


def runtime_of(language: str):
    """The language's sandbox runtime; a test of a runtime setup does not build is skipped when it is absent."""
    definition = catalog.definition(language)
    if current_image(definition.image) is None:
        if definition.prebuilt:
            pytest.fail(f"{definition.image} is missing or predates the helper: scripts/setup.sh builds it")
        pytest.skip(f"{definition.image} is not built on this machine")
    return definition.to_runtime()


def run_in(language: str, kind: str, **limits):
    limits.setdefault("memory_mb", ROOMY_MB)
    limits.setdefault("timeout_s", 20)
    return execute(PROGRAMS[language][kind], runtime=runtime_of(language), **limits)


@pytest.mark.parametrize("language", list(PROGRAMS))
def test_alice_hello_world_runs_in_every_language(language):
    observed = run_in(language, "hello")
    assert observed.result.outcome is Outcome.EXITED, observed.result.error
    assert observed.result.exit_code == 0, observed.stderr
    assert observed.text == f"{HELLO}\n"
    assert observed.stderr == b""
    assert (observed.result.compile_ms is not None) == (language in COMPILED)


@pytest.mark.parametrize("language", COMPILED)
def test_code_the_compiler_refuses_ends_as_a_compile_error_with_its_message_on_stderr(language):
    observed = run_in(language, "compile_error")
    assert observed.result.outcome is Outcome.COMPILE_ERROR
    assert observed.result.exit_code not in (0, None)
    assert b"undeclared" in observed.stderr
    assert observed.stdout == b""


@pytest.mark.parametrize("language", list(PROGRAMS))
def test_a_runtime_error_ends_with_the_languages_own_exit(language):
    observed = run_in(language, "runtime_error")
    assert observed.result.outcome is Outcome.EXITED, observed.result.error
    assert (observed.result.exit_code, observed.result.signal) == RUNTIME_ERROR_EXIT[language]


@pytest.mark.parametrize("language", list(PROGRAMS))
def test_an_endless_loop_is_timed_out_after_it_compiled(language):
    observed = run_in(language, "loop", timeout_s=2)
    assert observed.result.outcome is Outcome.TIMED_OUT
    assert (observed.result.compile_ms is not None) == (language in COMPILED)


@pytest.mark.parametrize("language", list(PROGRAMS))
def test_a_memory_hog_is_killed_at_its_memory_limit(language):
    observed = run_in(language, "memory", memory_mb=256)
    assert observed.result.outcome is Outcome.OOM_KILLED, (observed.result.outcome, observed.stderr[-500:])


def test_the_compiler_gets_its_own_memory_and_the_program_is_held_to_its_own():
    """gcc needs more than the 48 MB this program may use: it compiles under the runtime's 384 MB,
    then the program that allocates 100 MB is killed at its 48 MB."""
    runtime = replace(runtime_of("c"), compile_memory_mb=384)
    observed = execute(PROGRAMS["c"]["memory"], runtime=runtime, memory_mb=48, timeout_s=20)
    assert observed.result.compile_ms is not None, observed.stderr[-500:]
    assert observed.result.outcome is Outcome.OOM_KILLED, (observed.result.outcome, observed.stderr[-500:])
    assert observed.result.peak_memory_bytes <= 384 * MIB
    hello = execute(PROGRAMS["c"]["hello"], runtime=runtime, memory_mb=48, timeout_s=20)
    assert hello.result.exit_code == 0 and hello.text == f"{HELLO}\n", hello.stderr[-500:]


def test_a_sandbox_whose_cgroup_is_hidden_gets_its_memory_from_the_engine_under_runc_and_fails_closed_under_gvisor():
    """A worker that cannot see the host's cgroups (one in a container of its own): runc's limit goes
    through the engine's update; runsc has none, so the step is refused rather than run with more."""
    profile = Profile(image=runtime_of("c").image, limits=small_limits(memory_mb=256), build_dir=True)
    sandbox = Sandbox.create(profile, run_id=f"memory-{uuid.uuid4().hex[:8]}")
    try:
        sandbox.cgroup = CgroupReader("no-such-container")
        with pytest.raises(SandboxSetupError, match="over the 256 MB"):
            sandbox.set_memory(512)
        if is_gvisor(profile.engine_runtime):
            with pytest.raises(SandboxSetupError, match="host cgroup is not visible"):
                sandbox.set_memory(64)
            assert sandbox.memory_mb == 256
        else:
            sandbox.set_memory(64)
            assert sandbox.api.inspect_container(sandbox.container_id)["HostConfig"]["Memory"] == 64 * MIB
            assert sandbox.memory_mb == 64
    finally:
        sandbox.remove()


def _memory_limit_bytes(sandbox: Sandbox) -> int:
    reader = sandbox.cgroup
    if reader.version == 2:
        return int((reader.dirs["unified"] / "memory.max").read_text())
    return int((reader.dirs["memory"] / "memory.limit_in_bytes").read_text())


def test_a_pool_sandbox_adopted_after_a_narrower_program_gets_the_memory_its_next_step_asks_for():
    """A batch's sandbox is parked with its last program's limit in its cgroup; the worker that adopts
    it from the engine's listing does not know that limit, so the next step's limit is always set."""
    profile = Profile(image=runtime_of("c").image, limits=small_limits(memory_mb=256), build_dir=True)
    sandbox = Sandbox.create(profile, run_id=f"memory-{uuid.uuid4().hex[:8]}")
    try:
        assert sandbox.cgroup.available, "the sandbox's host cgroup is visible on the test machine"
        sandbox.set_memory(64)
        narrowed = _memory_limit_bytes(sandbox)
        adopted = Sandbox.adopt(sandbox.container_id, profile)
        adopted.set_memory(256)
        assert _memory_limit_bytes(adopted) > narrowed
        assert adopted.memory_mb == 256
    finally:
        sandbox.remove()


# A million-element initializer from six short macros: gcc's front end needs far more than 24 MB for it.
HUGE_INITIALIZER = (
    "#define L1 1,1,1,1,1,1,1,1,1,1\n"
    + "".join(f"#define L{n} {','.join([f'L{n - 1}'] * 10)}\n" for n in range(2, 7))
    + "int table[] = { L6 };\nint main(void) { return table[7] - 1; }\n"
)


def test_a_compiler_over_its_own_memory_limit_ends_as_out_of_memory_not_a_compile_error():
    runtime = replace(runtime_of("c"), compile_memory_mb=24)
    observed = execute(HUGE_INITIALIZER, runtime=runtime, memory_mb=ROOMY_MB, timeout_s=20)
    assert observed.result.outcome is Outcome.OOM_KILLED, (observed.result.outcome, observed.stderr[-500:])
    assert observed.stdout == b""


def test_numpy_imports_and_computes_in_python_scientific():
    code = (
        "import numpy, pandas, scipy.linalg, sympy\n"
        "a = numpy.array([[2.0, 1.0], [1.0, 3.0]])\n"
        "print(round(float(numpy.linalg.det(a)), 6), round(float(scipy.linalg.det(a)), 6))\n"
        "print(int(pandas.Series([1, 2, 3]).sum()), sympy.factor(sympy.Symbol('x') ** 2 - 1))\n"
    )
    observed = execute(code, runtime=runtime_of("python-scientific"), memory_mb=ROOMY_MB, timeout_s=30)
    assert observed.result.exit_code == 0, observed.stderr
    assert observed.text == "5.0 5.0\n6 (x - 1)*(x + 1)\n"


def test_the_compilers_output_counts_against_the_output_cap():
    noisy = "#warning " + "w" * 200 + "\n" * 1 + PROGRAMS["c"]["hello"]
    observed = execute(noisy * 1, runtime=runtime_of("c"), memory_mb=ROOMY_MB, timeout_s=20, output_cap_bytes=64)
    assert observed.result.output_truncated
    assert len(observed.stdout) + len(observed.stderr) <= 64


@pytest.mark.parametrize("language", ["c", "java"])
def test_a_compiled_sample_runs_under_several_tests_each_compiled_in_its_own_directory(language):
    """How a task's tests run a sample: one program per test in one sandbox (io, then a check)."""
    sample = {
        "c": "int twice(int n) { return 2 * n; }\n",
        "java": "class Solution { static int twice(int n) { return 2 * n; } }\n",
    }[language]
    io_main = {
        "c": '#include <stdio.h>\nint main(void) { int n; scanf("%d", &n); printf("%d\\n", twice(n)); }\n',
        "java": "public class Main { public static void main(String[] a) {"
        " System.out.println(Solution.twice(new java.util.Scanner(System.in).nextInt())); } }\n",
    }[language]
    check = {
        "c": "int main(void) { return twice(21) == 42 ? 0 : 1; }\n",
        "java": "public class Main { public static void main(String[] a) {"
        " System.exit(Solution.twice(21) == 42 ? 0 : 1); } }\n",
    }[language]
    programs = [Program((sample + io_main).encode(), b"5\n"), Program((sample + check).encode())]
    output: list[tuple[str, bytes]] = []
    request = RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime_of(language),
        code=b"",
        stdin=b"",
        limits=small_limits(memory_mb=ROOMY_MB, timeout_s=20),
    )
    results = run_programs(request, programs, on_output=lambda s, d: output.append((s, d)), control=lambda: None)
    assert [(r.outcome, r.exit_code) for r in results] == [(Outcome.EXITED, 0), (Outcome.EXITED, 0)], output
    assert b"".join(d for s, d in output if s == "stdout") == b"10\n"
    assert all(r.compile_ms is not None for r in results)
