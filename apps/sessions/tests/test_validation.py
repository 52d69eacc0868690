"""What the sessions API accepts, field by field (no sandbox needed)."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ValidationError

from apps.sandboxing.incontainer.agent import Output, exit_status
from apps.sessions import recording
from apps.sessions.services import SessionError, resolve_path
from apps.sessions.validation import exec_fields, session_fields


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("notes.txt", "/sandbox/notes.txt"),
        ("a/../b", "/sandbox/b"),
        ("/tmp/x", "/tmp/x"),
        ("//tmp//x", "/tmp/x"),
        ("/dev/shm/x", "/dev/shm/x"),
        ("../tmp/x", "/tmp/x"),
    ],
)
def test_paths_are_absolute_and_normalised_with_relative_ones_in_the_workspace(given, resolved):
    assert resolve_path(given) == resolved


@pytest.mark.parametrize(
    "path", ["", "a\0b", "x" * 5000, "/proc/self/environ", "../../proc/1/mem", "/sys/kernel", "/dev/mem", "/dev", 7]
)
def test_paths_the_sandbox_does_not_expose_are_refused_as_bad_path(path):
    with pytest.raises(SessionError) as refused:
        resolve_path(path)
    assert (refused.value.status, refused.value.code) == (400, "bad_path")


def test_an_exec_gets_the_operators_default_timeout_and_the_workspace_as_cwd(settings):
    fields = exec_fields({"cmd": ["ls", "-l"]})
    assert fields == {
        "cmd": ["ls", "-l"],
        "stdin": None,
        "env": {},
        "cwd": "/sandbox",
        "timeout_s": settings.SESSION_EXEC_TIMEOUT_S,
        "user": "",
    }


def test_empty_input_is_still_input():
    assert exec_fields({"cmd": ["cat"], "input": ""})["stdin"] == b""
    assert exec_fields({"cmd": ["cat"], "input_base64": "/wA="})["stdin"] == b"\xff\x00"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cmd": "ls -l"}, "cmd"),
        ({"cmd": []}, "cmd"),
        ({"cmd": ["ls", 1]}, "cmd"),
        ({"cmd": [""]}, "cmd"),
        ({"cmd": ["ls\0"]}, "cmd"),
        ({"cmd": ["ls"], "timeout_s": True}, "timeout_s"),
        ({"cmd": ["ls"], "timeout_s": 0}, "timeout_s"),
        ({"cmd": ["ls"], "timeout_s": 10**9}, "timeout_s"),
        ({"cmd": ["ls"], "env": {"A-B": "x"}}, "env"),
        ({"cmd": ["ls"], "env": {"A": 1}}, "env.A"),
        ({"cmd": ["ls"], "env": ["A=1"]}, "env"),
        ({"cmd": ["ls"], "input": b"x".decode(), "input_base64": "eA=="}, "input"),
        ({"cmd": ["ls"], "input_base64": "not base64!"}, "input_base64"),
        ({"cmd": ["ls"], "cwd": "/proc"}, "cwd"),
        ({"cmd": ["ls"], "user": 0}, "user"),
        ({"cmd": ["ls"], "shell": True}, "shell"),
    ],
)
def test_bad_exec_fields_are_named_in_a_400(body, field):
    with pytest.raises(ValidationError) as refused:
        exec_fields(body)
    assert field in refused.value.detail


def test_an_input_over_the_file_limit_is_a_413(settings):
    settings.SESSION_FILE_MAX_BYTES = 1024
    with pytest.raises(SessionError) as refused:
        exec_fields({"cmd": ["cat"], "input": "x" * 1025})
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"language": "cobol"}, "language"),
        ({"image": "alpine:latest"}, "image"),
        ({"memory_mb": 10**9}, "memory_mb"),
        ({"memory_mb": 1.5}, "memory_mb"),
        ({"cpus": 64}, "cpus"),
        ({"idle_timeout_s": 0}, "idle_timeout_s"),
        ({"max_lifetime_s": 10**9}, "max_lifetime_s"),
        ({"metadata": [1]}, "metadata"),
        ({"metadata": {"k": "x" * 20000}}, "metadata"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_session_fields_are_named_in_a_400(body, field):
    with pytest.raises(ValidationError) as refused:
        session_fields(body)
    assert field in refused.value.detail


def test_a_new_session_gets_the_operators_defaults(settings):
    fields = session_fields({})
    assert (fields["memory_mb"], fields["idle_timeout_s"], fields["max_lifetime_s"]) == (
        settings.SESSION_DEFAULT_MEMORY_MB,
        settings.SESSION_IDLE_TIMEOUT_S,
        settings.SESSION_MAX_LIFETIME_S,
    )


def test_the_transcript_keeps_a_bounded_command_line_and_output_without_nul(settings):
    settings.SESSION_TRANSCRIPT_OUTPUT_BYTES = 8
    assert recording.kept_text(b"ab\0cdefghijkl") == "ab\ufffdcdefg"
    kept = recording.kept_cmd(["printf", "%s", *(["x" * 65536] * 16)])
    assert sum(len(arg) for arg in kept) < recording.CMD_KEPT_CHARS + 100
    assert kept[-1].startswith("…") and kept[-1].endswith("more arguments")


def test_the_agent_keeps_output_up_to_its_cap_across_both_streams_and_counts_the_rest():
    output = Output(cap=5)
    output.add(1, b"abc")
    output.add(2, b"defg")
    output.add(1, b"hij")
    assert (bytes(output.kept[1]), bytes(output.kept[2])) == (b"abc", b"de")
    assert output.total == {1: 6, 2: 4} and output.truncated


def test_a_signal_death_reads_as_a_shell_would_report_it():
    assert (exit_status(-15), exit_status(3), exit_status(0)) == (143, 3, 0)
