"""`crucible sandbox …` against a real Daphne and session host (tests/stack.py)."""

from __future__ import annotations

import io
import json
import sys
import threading
import time

import pytest
from crucible_client import cli

from apps.accounts.models import ApiToken
from tests.stack import live_sessions_stack  # noqa: F401 (the fixture)

live = pytest.mark.django_db(transaction=True)
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def crucible(live_sessions_stack, alice):  # noqa: F811
    """Run the CLI in this process (as alice unless told otherwise); returns its exit status."""
    keys = {}

    def run(*argv, user=alice):
        if user.pk not in keys:
            keys[user.pk] = ApiToken.issue(user, "cli")[1]
        return cli.main(["--url", live_sessions_stack.url, "--token", keys[user.pk], *argv])

    return run


@pytest.fixture
def alices_sandbox(crucible, capsys):
    """A sandbox alice started with the CLI (deleted at the end)."""
    assert crucible("sandbox", "create", "--language", "python", "--memory", "256") == 0
    sandbox_id = capsys.readouterr().out.strip()
    yield sandbox_id
    crucible("sandbox", "delete", sandbox_id)
    capsys.readouterr()


def feed_stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# --- without a server -------------------------------------------------------------------------------


def test_exec_without_a_command_says_how_to_give_one(capsys):
    assert cli.main(["--url", NOWHERE, "--token", "t", "sandbox", "exec", "some-id"]) == 2
    assert "no command: crucible sandbox exec ID [options] -- COMMAND" in capsys.readouterr().err


def test_an_env_without_a_value_is_refused_before_anything_is_sent(capsys):
    argv = ["--url", NOWHERE, "--token", "t", "sandbox", "exec", "some-id", "--env", "NOVALUE", "--", "env"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--env takes NAME=VALUE, not 'NOVALUE'" in err and "cannot reach" not in err


@pytest.mark.parametrize(
    ("result", "status"),
    [
        ({"returncode": 3}, 3),
        ({"returncode": None, "timed_out": True}, 124),
        ({"returncode": None, "error": "not_found", "error_message": "nope: not found"}, 127),
        ({"returncode": None, "error": "permission_denied"}, 126),
        ({"returncode": None, "error": "user_unsupported"}, 1),
        ({"returncode": -9}, 137),
    ],
)
def test_exec_exits_with_the_commands_status_or_what_a_shell_would_say(result, status, capsys):
    assert cli.exec_exit_status(result) == status


# --- against the live stack ---------------------------------------------------------------------------


@live
def test_alice_puts_a_program_runs_it_and_reads_what_it_wrote(crucible, alices_sandbox, tmp_path, capsys, monkeypatch):
    program = tmp_path / "main.py"
    program.write_text(
        "import os, sys\n"
        "data = sys.stdin.read()\n"
        "open('out/result.txt', 'w').write(data.upper() + os.environ['SUFFIX'])\n"
        "print('wrote', len(data), flush=True)\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    assert crucible("sandbox", "put", alices_sandbox, str(program), "src/main.py") == 0
    assert capsys.readouterr().out.startswith("/sandbox/src/main.py (")
    assert crucible("sandbox", "exec", alices_sandbox, "--", "mkdir", "out") == 0
    feed_stdin(monkeypatch, b"hello")
    argv = ["sandbox", "exec", alices_sandbox, "--stdin", "-", "--env", "SUFFIX=!", "--", "python3", "src/main.py"]
    assert crucible(*argv) == 3
    captured = capsys.readouterr()
    assert captured.out == "wrote 5\n" and captured.err == "to stderr\n"
    output = tmp_path / "result.txt"
    assert crucible("sandbox", "get", alices_sandbox, "out/result.txt", "-o", str(output)) == 0
    assert output.read_text() == "HELLO!"
    assert crucible("sandbox", "exec", alices_sandbox, "--", "no-such-command") == 127
    assert "not_found:" in capsys.readouterr().err
    assert crucible("sandbox", "transcript", alices_sandbox) == 0
    table = capsys.readouterr().out
    assert "write_file" in table and "/sandbox/src/main.py" in table and "python3 src/main.py" in table
    assert "[error not_found]" in table


@live
def test_the_transcript_downloads_as_json_lines_with_env_names_not_values(crucible, alices_sandbox, capsys):
    argv = ["sandbox", "exec", alices_sandbox, "--env", "API_KEY=hunter2", "--", "sh", "-c", "echo $API_KEY | wc -c"]
    assert crucible(*argv) == 0
    assert crucible("sandbox", "exec", alices_sandbox, "--", "true") == 0
    capsys.readouterr()
    assert crucible("sandbox", "transcript", alices_sandbox, "--jsonl") == 0
    steps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(step["kind"], step["cmd"][0]) for step in steps] == [("exec", "sh"), ("exec", "true")]
    assert steps[0]["env_names"] == ["API_KEY"] and "hunter2" not in json.dumps(steps)


@live
def test_a_command_that_outlives_its_timeout_exits_124(crucible, alices_sandbox, capsys):
    assert crucible("sandbox", "exec", alices_sandbox, "--timeout", "1", "--", "sleep", "30") == 124
    assert "timed out" in capsys.readouterr().err


@live
def test_list_and_show_then_delete_ends_it(crucible, alices_sandbox, capsys):
    assert crucible("sandbox", "list", "--status", "ready") == 0
    assert alices_sandbox in capsys.readouterr().out
    assert crucible("sandbox", "show", alices_sandbox) == 0
    out = capsys.readouterr().out
    assert "status:        ready" in out and "256 MB" in out and "working dir:   /sandbox" in out
    assert crucible("sandbox", "delete", alices_sandbox) == 0
    assert capsys.readouterr().out == f"{alices_sandbox}: ended (deleted)\n"
    assert crucible("sandbox", "exec", alices_sandbox, "--", "true") == 2
    assert "HTTP 409" in capsys.readouterr().err


@live
def test_bob_cannot_touch_alices_sandbox(crucible, alices_sandbox, bob, capsys):
    for argv in (["show", alices_sandbox], ["exec", alices_sandbox, "--", "true"], ["get", alices_sandbox, "x"]):
        assert crucible("sandbox", *argv, user=bob) == 2
        assert "HTTP 404" in capsys.readouterr().err
    assert crucible("sandbox", "delete", alices_sandbox, user=bob) == 2
    assert "(no such sandbox, or not yours)" in capsys.readouterr().err
    assert crucible("sandbox", "show", alices_sandbox) == 0
    assert "status:        ready" in capsys.readouterr().out


@live
def test_transcript_follow_prints_each_step_once_until_the_sandbox_ends(crucible, alices_sandbox, capsys):
    result = {}
    follower = threading.Thread(
        target=lambda: result.setdefault("status", crucible("sandbox", "transcript", alices_sandbox, "--follow")),
        daemon=True,
    )
    follower.start()
    assert crucible("sandbox", "exec", alices_sandbox, "--", "echo", "first") == 0
    assert crucible("sandbox", "exec", alices_sandbox, "--", "sh", "-c", "sleep 2; echo second") == 0
    printed = ""
    deadline = time.monotonic() + 30
    while "sleep 2; echo second" not in printed:
        assert time.monotonic() < deadline, f"the follower never printed the second step: {printed!r}"
        time.sleep(0.1)
        printed += capsys.readouterr().out
    assert follower.is_alive()  # the sandbox is still there: it keeps following
    assert crucible("sandbox", "delete", alices_sandbox) == 0
    follower.join(timeout=30)
    assert result.get("status") == 0
    captured = capsys.readouterr()
    printed += captured.out
    assert printed.count("echo first") == 1 and printed.count("echo second") == 1
    assert f"sandbox {alices_sandbox} ended (deleted)" in captured.err
