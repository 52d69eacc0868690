"""The `crucible` command-line client (client/crucible_client/cli.py), against a real Daphne (tests/stack.py)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pytest
import requests
from crucible_client import cli

from apps.accounts.models import ApiToken
from apps.evaluations import publisher
from apps.evaluations.models import Evaluation, OutputChunk, Runtime, Status
from apps.evaluations.runtimes import ensure_default_runtimes
from apps.evaluations.tests.factories import add_artifact, make_evaluation
from tests.stack import live_stack  # noqa: F401 (the fixture)

live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runtimes(transactional_db):
    """Transactional tests flush the tables, data migrations included: put the runtimes back."""
    ensure_default_runtimes(Runtime)


def store_and_publish(evaluation, seq, stream="stdout", text=None):
    chunk = OutputChunk.objects.create(
        evaluation=evaluation, seq=seq, stream=stream, data=(text or f"{stream} {seq}\n").encode()
    )
    publisher.publish_log(evaluation.pk, chunk.seq, chunk.stream, chunk.text)


@pytest.fixture
def alice_key(alice):
    return ApiToken.issue(alice, "cli")[1]


@pytest.fixture
def crucible(live_stack, alice_key):  # noqa: F811
    """Run the CLI in this process as alice; returns its exit status."""

    def run(*argv, token=alice_key):
        return cli.main(["--url", live_stack.url, "--token", token, *argv])

    return run


def run_in_thread(function, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)), daemon=True)
    thread.start()
    return thread, result


# --- without a server -----------------------------------------------------------------------


def test_without_a_token_it_says_how_to_get_one(capsys, monkeypatch):
    monkeypatch.delenv("CRUCIBLE_TOKEN", raising=False)
    assert cli.main(["--url", "http://127.0.0.1:9", "status", "x"]) == 2
    assert "no API token: set CRUCIBLE_TOKEN" in capsys.readouterr().err


def test_an_unreachable_server_is_one_line_not_a_traceback(capsys):
    assert cli.main(["--url", "http://127.0.0.1:9", "--token", "t", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crucible: cannot reach http://127.0.0.1:9") and "Traceback" not in err


def test_field_errors_and_retry_after_are_shown_plainly():
    response = requests.Response()
    response.status_code, response._content = 400, b'{"memory_mb": ["Must be between 16 and 2048."]}'
    assert cli.http_error_message(response) == "HTTP 400: memory_mb: Must be between 16 and 2048."
    response = requests.Response()
    response.status_code, response._content = 429, b'{"detail": "Too many active evaluations."}'
    response.headers["Retry-After"] = "10"
    assert cli.http_error_message(response) == "HTTP 429: Too many active evaluations. (retry after 10 s)"


@pytest.mark.parametrize(
    ("status", "exit_code", "expected"),
    [("succeeded", 0, 0), ("failed", 3, 3), ("timed_out", None, 1), ("oom_killed", 137, 137), ("cancelled", 0, 1)],
)
def test_the_exit_status_is_the_programs_or_1(status, exit_code, expected):
    assert cli.exit_status(status, exit_code) == expected


# --- against the live stack -----------------------------------------------------------------


@live
def test_status_and_list_show_my_evaluation(crucible, alice, capsys):
    evaluation = make_evaluation(alice, status=Status.FAILED, exit_code=3, duration_ms=1500)
    assert crucible("status", str(evaluation.pk)) == 0
    out = capsys.readouterr().out
    assert "status:           failed" in out and "exit code:        3" in out and "1500 ms" in out
    assert crucible("list", "--status", "failed") == 0
    assert str(evaluation.pk) in capsys.readouterr().out


@live
def test_another_researchers_evaluation_is_not_found(crucible, bob, capsys):
    evaluation = make_evaluation(bob)
    assert crucible("status", str(evaluation.pk)) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert crucible("logs", str(evaluation.pk), "--follow") == 2
    assert "no such evaluation" in capsys.readouterr().err


@live
def test_a_revoked_token_is_refused_with_its_reason(crucible, alice, capsys):
    token, key = ApiToken.issue(alice, "old")
    token.revoke()
    assert crucible("list", token=key) == 2
    assert "HTTP 401" in capsys.readouterr().err


@live
def test_cancel_and_stop(crucible, alice, capsys):
    first, second = make_evaluation(alice), make_evaluation(alice)
    assert crucible("cancel", str(first.pk)) == 0
    assert crucible("stop", str(second.pk)) == 0
    out = capsys.readouterr().out
    assert f"{first.pk}: cancelled" in out and f"{second.pk}: stopped" in out


@live
def test_logs_print_stdout_and_stderr_to_their_own_streams(crucible, alice, capsys):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    for seq, stream in enumerate(["stdout", "stderr", "stdout"], start=1):
        OutputChunk.objects.create(evaluation=evaluation, seq=seq, stream=stream, data=f"{stream} {seq}\n".encode())
    assert crucible("logs", str(evaluation.pk)) == 0
    captured = capsys.readouterr()
    assert captured.out == "stdout 1\nstdout 3\n" and captured.err == "stderr 2\n"


class Printed:
    """What the CLI (running in another thread) has printed so far, read from pytest's capture."""

    def __init__(self, capsys):
        self.capsys = capsys
        self.out = self.err = ""

    def read(self) -> Printed:
        captured = self.capsys.readouterr()
        self.out, self.err = self.out + captured.out, self.err + captured.err
        return self

    def wait_for(self, text: str, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.read().out + self.err:
            assert time.monotonic() < deadline, f"the CLI never printed {text!r} (out={self.out!r}, err={self.err!r})"
            time.sleep(0.02)


@live
def test_logs_follow_streams_until_the_end_and_exits_with_the_exit_code(crucible, alice, capsys, monkeypatch):
    from websockets.sync import client as ws_client

    real_connect, connections = ws_client.connect, []
    monkeypatch.setattr(ws_client, "connect", lambda url, **kw: connections.append(url) or real_connect(url, **kw))
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    store_and_publish(evaluation, 1)
    printed = Printed(capsys)
    thread, result = run_in_thread(crucible, "logs", str(evaluation.pk), "--follow")
    printed.wait_for("stdout 1\n")  # connected: the stored line was replayed
    # Each new line reaches the client while the run is still going, over the one connection.
    store_and_publish(evaluation, 2, "stderr")
    printed.wait_for("stderr 2\n")
    store_and_publish(evaluation, 3)
    printed.wait_for("stdout 3\n")
    assert thread.is_alive() and "value" not in result
    evaluation.finish(Status.FAILED, exit_code=3)
    publisher.publish_end(evaluation)
    thread.join(timeout=15)
    assert result.get("value") == 3
    printed.read()
    assert printed.out == "stdout 1\nstdout 3\n" and printed.err == "stderr 2\n"
    assert len(connections) == 1, connections


@live
def test_follow_reconnects_after_a_drop_without_losing_or_repeating_lines(crucible, alice, capsys, monkeypatch):
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync import client as ws_client

    real_connect = ws_client.connect
    urls = []

    class DropsAfterTwoMessages:
        """The first connection breaks (as if the network dropped) after two messages."""

        def __init__(self, url, **kwargs):
            urls.append(url)
            self.connection = real_connect(url, **kwargs)
            self.first = len(urls) == 1

        def __enter__(self):
            self.connection.__enter__()
            return self

        def __exit__(self, *exc):
            return self.connection.__exit__(*exc)

        @property
        def close_code(self):
            return self.connection.close_code

        def __iter__(self):
            for count, message in enumerate(self.connection, start=1):
                yield message
                if self.first and count == 2:  # status + chunk 1
                    raise ConnectionClosedError(None, None)

    monkeypatch.setattr(ws_client, "connect", DropsAfterTwoMessages)
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    for seq in (1, 2, 3):
        OutputChunk.objects.create(evaluation=evaluation, seq=seq, stream="stdout", data=f"line {seq}\n".encode())
    assert crucible("logs", str(evaluation.pk), "--follow") == 0
    assert capsys.readouterr().out == "line 1\nline 2\nline 3\n"
    assert [url.rsplit("?", 1)[1] for url in urls] == ["after=0", "after=1"]


@live
@pytest.mark.docker
def test_submit_follow_runs_the_program_and_exits_with_its_code(crucible, runtimes, tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text(
        "import sys, time\nprint('to stdout', flush=True)\nprint('to stderr', file=sys.stderr, flush=True)\n"
        "time.sleep(0.5)\nprint('bye')\nsys.exit(3)\n"
    )
    assert crucible("submit", str(program), "--timeout", "20", "--follow") == 3
    captured = capsys.readouterr()
    evaluation = Evaluation.objects.get()
    assert evaluation.status == Status.FAILED
    # Without a terminal too, the id comes first and the final status last (notes on stderr, marked).
    program_err = [line for line in captured.err.splitlines() if not line.startswith("crucible: ")]
    assert captured.out == "to stdout\nbye\n" and program_err == ["to stderr"]
    assert captured.err.startswith(f"crucible: submitted {evaluation.pk} (")
    assert captured.err.endswith(f"crucible: evaluation {evaluation.pk} failed, exit code 3\n")


@live
@pytest.mark.docker
def test_submit_without_follow_prints_the_id(crucible, runtimes, tmp_path, capsys):
    program = tmp_path / "prog.sh"
    program.write_text("echo hi\n")
    assert crucible("submit", str(program), "--memory", "64") == 0
    evaluation = Evaluation.objects.get(pk=capsys.readouterr().out.strip())
    assert (evaluation.language, evaluation.memory_mb) == ("bash", 64)
    assert crucible("submit", str(program), "--memory", "999999") == 2
    assert "HTTP 400: memory_mb: Must be between" in capsys.readouterr().err


@live
@pytest.mark.docker
def test_runtimes_lists_what_the_server_can_run(crucible, runtimes, capsys):
    Runtime.objects.filter(name="go").update(image="crucible-runtime-go:never-built")
    assert crucible("runtimes") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "compiled" in lines["c"] and "available" in lines["c"]
    assert "interpreted" in lines["python"] and "available" in lines["python"]
    assert "not built" in lines["go"]


@live
@pytest.mark.docker
def test_submit_takes_the_language_from_the_suffix_and_sends_files_args_and_env(crucible, runtimes, tmp_path, capsys):
    program, header = tmp_path / "main.c", tmp_path / "answer.h"
    program.write_text('#include "answer.h"\nint main(void) { return ANSWER; }\n')
    header.write_text("#define ANSWER 0\n")
    argv = ["submit", str(program), "--file", str(header), "--arg", "a b", "--arg=-x", "--env", "MODE=fast"]
    assert crucible(*argv) == 0
    evaluation = Evaluation.objects.get(pk=capsys.readouterr().out.strip())
    assert evaluation.language == "c"
    assert (evaluation.files, evaluation.args, evaluation.env) == (
        {"answer.h": "#define ANSWER 0\n"},
        ["a b", "-x"],
        {"MODE": "fast"},
    )
    assert crucible("submit", str(program), "--env", "PATH=/tmp") == 2
    assert "HTTP 400: env:" in capsys.readouterr().err


# --- for scripts: exit codes, paging, JSON, short ids, artifacts (issue 16) -------------------


def test_the_final_status_is_printed_without_a_terminal_too(capsys):
    assert cli.finish("failed", 3, "abc", show_end=True) == 3
    assert capsys.readouterr().err == "crucible: evaluation abc failed, exit code 3\n"
    assert cli.finish("timed_out", None, "abc", show_end=False) == 1
    assert capsys.readouterr().err == ""


def test_the_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "exit status (usable in CI scripts):" in out and "130      interrupted" in out


def test_durations_and_times_read_like_a_person_wrote_them(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    assert cli.when("2026-05-04T14:03:07.123456Z") == "2026-05-04 14:03:07 UTC"
    assert cli._duration(850) == "850 ms"
    assert cli._duration(11029) == "11.0 s (11029 ms)"
    assert cli._duration(123000) == "2 min 3 s (123000 ms)"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("result.json", "result.json"),
        ("plots/a b.png", "plots/a_b.png"),
        ("../../etc/passwd", "etc/passwd"),
        ("/abs/x", "abs/x"),
        ("..\\..\\win.txt", "win.txt"),
        ("..", "artifact"),
        ("a/./b", "a/b"),
    ],
)
def test_artifact_names_become_paths_that_stay_inside_the_folder(name, path):
    assert cli.safe_relative_path(name).as_posix() == path


@live
def test_list_pages_through_past_the_servers_page_size_and_says_when_more_are_left(crucible, alice, capsys):
    for _ in range(57):
        make_evaluation(alice)
    assert crucible("list", "--limit", "55") == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 55
    assert "showing the newest 55; there are more" in captured.err
    assert crucible("list", "--limit", "0", "--json") == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 57 and captured.err == ""


@live
def test_list_shows_names_labels_and_readable_times_and_filters_by_label(crucible, alice, capsys):
    make_evaluation(alice, name="baseline", labels=["exp-3"])
    make_evaluation(alice, name="other")
    assert crucible("list", "--label", "exp-3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("baseline [exp-3]")
    assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+  ", lines[1])  # to the second, with a zone


@live
def test_the_short_id_the_pages_show_works_and_an_ambiguous_one_says_so(crucible, alice, capsys):
    evaluation = make_evaluation(alice, status=Status.FAILED, exit_code=3)
    assert crucible("status", str(evaluation.pk)[:8]) == 0
    assert f"id:               {evaluation.pk}" in capsys.readouterr().out
    make_evaluation(alice, id=uuid.UUID("abcdef01-0000-4000-8000-000000000001"))
    make_evaluation(alice, id=uuid.UUID("abcdef01-0000-4000-8000-000000000002"))
    assert crucible("cancel", "abcdef01") == 2
    assert "HTTP 400: More than one evaluation's id starts with 'abcdef01'" in capsys.readouterr().err
    assert crucible("status", "not-an-id") == 2
    assert "is not an evaluation id" in capsys.readouterr().err


@live
def test_artifacts_are_listed_and_downloaded_under_safe_names(crucible, alice, capsys, tmp_path):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    add_artifact(evaluation, "result.json", b'{"ok": true}')
    add_artifact(evaluation, "../escape.txt", b"caught")
    assert crucible("artifacts", str(evaluation.pk)[:8]) == 0
    assert "result.json" in capsys.readouterr().out
    out = tmp_path / "out"
    assert crucible("artifacts", str(evaluation.pk), "--out", str(out)) == 0
    assert (out / "result.json").read_bytes() == b'{"ok": true}'
    assert (out / "escape.txt").read_bytes() == b"caught"
    assert not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["escape.txt", "result.json"]  # no temporary left behind
