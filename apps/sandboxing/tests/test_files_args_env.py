"""A submission with several files, arguments and environment variables, on the real engine."""

from __future__ import annotations

import uuid

import pytest

from apps.sandboxing import catalog
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import runtime_for, submission_extras_problems
from apps.sandboxing.runner import run
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker


def run_with(runtime, code: str, *, files=None, args=(), env=None, **limits):
    output: list[tuple[str, bytes]] = []
    request = RunRequest(
        run_id=str(uuid.uuid4()),
        runtime=runtime,
        code=code.encode(),
        stdin=b"",
        limits=small_limits(**limits),
        files={name: text.encode() for name, text in (files or {}).items()},
        args=tuple(args),
        env=dict(env or {}),
    )
    result = run(request, on_output=lambda stream, data: output.append((stream, data)), control=lambda: None)
    stdout = b"".join(data for stream, data in output if stream == "stdout").decode()
    stderr = b"".join(data for stream, data in output if stream == "stderr").decode()
    return result, stdout, stderr


def test_a_python_entry_point_imports_its_sibling_file_and_reads_its_args_and_env_not_through_a_shell():
    code = "import sys, os, helper\nprint(helper.twice(21), sys.argv[1:], os.environ['GREETING'], os.environ['PATH'])\n"
    result, stdout, _ = run_with(
        runtime_for("python"),
        code,
        files={"helper.py": "def twice(n):\n    return 2 * n\n"},
        args=["$(id)", "a b", "; rm -rf /"],
        env={"GREETING": "hi alice"},
    )
    assert (result.outcome, result.exit_code) == (Outcome.EXITED, 0)
    assert stdout == "42 ['$(id)', 'a b', '; rm -rf /'] hi alice /usr/local/bin:/usr/bin:/bin\n"


def test_a_c_program_compiles_with_its_header_and_gets_its_args_but_the_compiler_does_not():
    code = (
        '#include <stdio.h>\n#include "answer.h"\n'
        'int main(int c, char **v) { printf("%d %s %d\\n", ANSWER, v[1], c); }\n'
    )
    result, stdout, stderr = run_with(
        catalog.runtime("c"), code, files={"answer.h": "#define ANSWER 42\n"}, args=["-o/build/x"], memory_mb=384
    )
    assert (result.outcome, result.exit_code) == (Outcome.EXITED, 0), stderr
    assert stdout == "42 -o/build/x 2\n"


def test_the_extra_files_are_read_only_for_the_program():
    code = "try:\n    open('/sandbox/data.txt', 'a').write('x')\nexcept OSError as e:\n    print(type(e).__name__)\n"
    result, stdout, _ = run_with(runtime_for("python"), code, files={"data.txt": "data"})
    assert stdout == "PermissionError\n"


@pytest.mark.parametrize(
    "files, args, env, field",
    [
        ({"../escape.py": ""}, [], {}, "files"),
        ({"/etc/passwd": ""}, [], {}, "files"),
        ({"dir/a.py": ""}, [], {}, "files"),
        ({"..": ""}, [], {}, "files"),
        ({"main.py": ""}, [], {}, "files"),  # the entry point's own name
        ({f"f{i}.py": "" for i in range(17)}, [], {}, "files"),
        ({}, ["ok", "nul\0"], {}, "args"),
        ({}, [1], {}, "args"),
        ({}, [], {"PATH": "/tmp"}, "env"),
        ({}, [], {"HOME": "/"}, "env"),
        ({}, [], {"CRUCIBLE_OUTPUT_DIR": "/tmp"}, "env"),
        ({}, [], {"LD_PRELOAD": "/tmp/x.so"}, "env"),
        ({}, [], {"BAD-NAME": "x"}, "env"),
        ({}, [], {"X": 1}, "env"),
    ],
)
def test_bad_files_args_or_env_are_named_by_field(files, args, env, field, settings):
    settings.SANDBOX_MAX_FILES = 16
    assert field in submission_extras_problems(runtime_for("python"), files, args, env)


def test_a_runtime_s_own_variables_cannot_be_overridden():
    go = catalog.runtime("go")
    assert "env" in submission_extras_problems(go, {}, [], {"GOCACHE": "/sandbox"})
    assert submission_extras_problems(go, {"util.go": ""}, ["x"], {"MY_SETTING": "1"}) == {}
