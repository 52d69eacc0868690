"""How the provider turns the API's exec answers and file errors into what Inspect expects (no server).

The live suite (test_inspect_conformance.py) covers what Inspect's own checks reach; these are the
answers those checks cannot provoke on demand: a command cut off by its session, output over the
server's cap, a signal, a timeout above the server's maximum, a path the server refuses.
"""

from __future__ import annotations

import errno

import pytest
from crucible_client import Client
from crucible_client.errors import BadRequest, Forbidden, NotFound, SessionEnded
from crucible_client.inspect_provider import CrucibleSandboxEnvironment, file_error, human_size, session_is_gone
from inspect_ai.util import OutputLimitExceededError, SandboxUnavailableError, SandboxUserUnsupportedError

LIMITS = {"exec_timeout_s_default": 600, "exec_timeout_s_max": 3600, "output_cap_bytes": 10 * 1024**2}


@pytest.fixture
def environment():
    return CrucibleSandboxEnvironment(Client("http://127.0.0.1:9", "t"), {"id": "s1", "limits": LIMITS})


def answer(**fields):
    return {
        "returncode": 0,
        "stdout": "",
        "stderr": "",
        "timed_out": False,
        "truncated": False,
        "error": None,
        **fields,
    }


def test_a_command_that_ran_is_its_result(environment):
    result = environment._exec_result(["ls"], answer(returncode=2, stdout="out", stderr="err"), None)
    assert (result.success, result.returncode, result.stdout, result.stderr) == (False, 2, "out", "err")


def test_a_signal_is_reported_as_a_shell_does(environment):
    assert environment._exec_result(["sleep", "9"], answer(returncode=-9), None).returncode == 137


def test_a_timeout_raises_with_what_was_printed(environment):
    with pytest.raises(TimeoutError, match="after 2 seconds") as error:
        environment._exec_result(["sleep", "9"], answer(returncode=None, timed_out=True, stdout="partial"), 2)
    assert error.value.truncated_output == "partial"


def test_output_over_the_servers_cap_raises_with_its_limit(environment):
    with pytest.raises(OutputLimitExceededError, match="limit of 10 MiB was exceeded") as error:
        environment._exec_result(["yes"], answer(truncated=True, stdout="y\n" * 3), None)
    assert error.value.truncated_output == "y\n" * 3


@pytest.mark.parametrize(
    ("problem", "raised"),
    [
        ("permission_denied", PermissionError),
        ("user_unsupported", SandboxUserUnsupportedError),
        ("interrupted", SandboxUnavailableError),
    ],
)
def test_a_command_that_could_not_start_raises_what_inspect_expects(environment, problem, raised):
    with pytest.raises(raised):
        environment._exec_result(["/etc/passwd"], answer(returncode=None, error=problem, error_message="no"), None)


@pytest.mark.parametrize(("problem", "code"), [("not_found", 127), ("bad_cwd", 126), ("too_many_processes", 126)])
def test_other_commands_that_could_not_start_are_failed_results_with_the_reason(environment, problem, code):
    result = environment._exec_result(["x"], answer(returncode=None, error=problem, error_message="why"), None)
    assert (result.success, result.returncode, result.stderr) == (False, code, "why\n")


def test_a_timeout_above_the_servers_maximum_is_capped_at_it(environment):
    assert (environment._timeout(None), environment._timeout(30), environment._timeout(7200)) == (None, 30, 3600)


@pytest.mark.parametrize(
    ("error", "raised", "number"),
    [
        (NotFound(404, "no such file", code="not_found"), FileNotFoundError, errno.ENOENT),
        (BadRequest(400, "a directory", code="is_a_directory"), IsADirectoryError, errno.EISDIR),
        (BadRequest(400, "not a directory", code="not_a_directory"), NotADirectoryError, errno.ENOTDIR),
        (BadRequest(400, "/proc is not exposed", code="bad_path"), PermissionError, errno.EACCES),
        (Forbidden(403, "permission denied", code="permission_denied"), PermissionError, errno.EACCES),
    ],
)
def test_file_errors_name_the_file(error, raised, number):
    mapped = file_error(error, "notes/a.txt")
    assert isinstance(mapped, raised) and mapped.errno == number and "notes/a.txt" in str(mapped)


def test_only_a_404_without_a_file_code_means_the_session_is_gone():
    assert session_is_gone(NotFound(404, "Not found."))
    assert not session_is_gone(NotFound(404, "no such file", code="not_found"))
    assert session_is_gone(SessionEnded(409, "ended", body={"end_reason": "idle_timeout"}))


def test_sizes_read_as_inspect_words_them():
    assert [human_size(n) for n in (1024, 100 * 1024**2, 2 * 1024**3, 1500)] == [
        "1 KiB",
        "100 MiB",
        "2 GiB",
        "1500 bytes",
    ]


async def test_the_connection_is_a_crucible_command_for_the_sandbox_user_only(environment):
    connection = await environment.connection()
    assert connection.type == "crucible"
    assert connection.command == "crucible --url http://127.0.0.1:9 sandbox exec s1 --stdin - -- sh"
    with pytest.raises(SandboxUserUnsupportedError):
        await environment.connection(user="root")
