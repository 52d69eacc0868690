"""Sessions through the real API, a real session host and real sandboxes (tests/stack.py)."""

from __future__ import annotations

import base64

import pytest
import requests

from apps.accounts.models import ApiToken
from apps.sessions.models import Session, Step
from tests.stack import live_sessions_stack  # noqa: F401, F811 (the fixture)

live = pytest.mark.django_db(transaction=True)


class Api:
    """One user's view of the sessions API."""

    def __init__(self, base: str, user) -> None:
        self.base = base + "/api/v1/sandboxes/"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {ApiToken.issue(user, 'sessions')[1]}"

    def create(self, **body):
        return self.http.post(self.base, json=body, timeout=60)

    def exec(self, session_id, cmd, **body):
        return self.http.post(f"{self.base}{session_id}/exec/", json={"cmd": cmd, **body}, timeout=120)

    def put(self, session_id, path, data: bytes):
        return self.http.put(f"{self.base}{session_id}/files/", params={"path": path}, data=data, timeout=120)

    def get(self, session_id, path, **params):
        return self.http.get(f"{self.base}{session_id}/files/", params={"path": path, **params}, timeout=120)


@pytest.fixture
def alice_sessions(live_sessions_stack, alice):  # noqa: F811
    return Api(live_sessions_stack.url, alice)


@pytest.fixture
def bob_sessions(live_sessions_stack, bob):  # noqa: F811
    return Api(live_sessions_stack.url, bob)


@pytest.fixture
def alices_session(alice_sessions):
    response = alice_sessions.create(metadata={"sample": "s1"})
    assert response.status_code == 201, response.text
    yield response.json()
    alice_sessions.http.delete(f"{alice_sessions.base}{response.json()['id']}/", timeout=30)


@live
def test_alice_starts_a_session_that_is_ready_under_the_sandbox_policy(alices_session):
    assert alices_session["status"] == "ready"
    assert alices_session["sandbox_runtime"] in ("runc", "runsc")
    assert alices_session["cwd"] == "/sandbox"
    assert alices_session["metadata"] == {"sample": "s1"}


@live
def test_state_persists_between_execs_and_scripts_alice_writes_can_run(alice_sessions, alices_session):
    sid = alices_session["id"]
    written = alice_sessions.exec(sid, ["sh", "-c", "printf '#!/bin/sh\\necho ran $1\\n' > run.sh && chmod +x run.sh"])
    assert written.json()["returncode"] == 0, written.text
    ran = alice_sessions.exec(sid, ["./run.sh", "again"]).json()
    assert (ran["returncode"], ran["stdout"]) == (0, "ran again\n")
    network = alice_sessions.exec(sid, ["python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 53), 2)"])
    assert network.json()["returncode"] != 0
    identity = alice_sessions.exec(sid, ["id", "-u"]).json()
    assert identity["stdout"].strip() == "10001"


@live
def test_an_exec_reports_output_exit_code_input_env_and_cwd(alice_sessions, alices_session):
    sid = alices_session["id"]
    result = alice_sessions.exec(
        sid,
        ["sh", "-c", "cat; echo $GREETING; pwd; echo oops >&2; exit 3"],
        input="in\n",
        env={"GREETING": "hi"},
        cwd="/tmp",
    ).json()
    assert result["returncode"] == 3
    assert result["stdout"] == "in\nhi\n/tmp\n"
    assert result["stderr"] == "oops\n"
    assert result["error"] is None and not result["timed_out"]
    binary = alice_sessions.exec(sid, ["cat"], input_base64=base64.b64encode(b"\xff\x00").decode()).json()
    assert base64.b64decode(binary["stdout_base64"]) == b"\xff\x00"


@live
def test_a_command_that_cannot_start_says_why(alice_sessions, alices_session):
    sid = alices_session["id"]
    assert alice_sessions.exec(sid, ["no-such-program"]).json()["error"] == "not_found"
    assert alice_sessions.exec(sid, ["/etc/passwd"]).json()["error"] == "permission_denied"
    assert alice_sessions.exec(sid, ["ls"], cwd="/no/such/dir").json()["error"] == "bad_cwd"
    assert alice_sessions.exec(sid, ["whoami"], user="root").json()["error"] == "user_unsupported"


@live
def test_a_timeout_kills_the_command_and_what_it_started(alice_sessions, alices_session):
    sid = alices_session["id"]
    result = alice_sessions.exec(sid, ["sh", "-c", "sleep 300 & echo started; sleep 300"], timeout_s=1).json()
    assert result["timed_out"] is True and result["returncode"] is None
    left = alice_sessions.exec(sid, ["sh", "-c", "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done"]).json()
    assert "sleep300" not in left["stdout"].replace("\0", "")


@live
def test_what_an_exec_leaves_running_is_killed_at_its_timeout(alice_sessions, alices_session):
    sid = alices_session["id"]
    result = alice_sessions.exec(sid, ["sh", "-c", "sleep 307 >/dev/null 2>&1 & echo started"], timeout_s=2).json()
    assert result["returncode"] == 0 and not result["timed_out"]

    def sleepers():
        listing = alice_sessions.exec(sid, ["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]).json()
        return "sleep 307" in listing["stdout"]

    assert sleepers()
    from tests.stack import wait_until

    wait_until(lambda: not sleepers(), timeout=20, what="the left-behind sleep to be killed")


@live
def test_files_round_trip_with_parents_created_and_clear_errors(alice_sessions, alices_session):
    sid = alices_session["id"]
    put = alice_sessions.put(sid, "deep/dir/data.bin", b"\x00\xffbytes")
    assert put.status_code == 200, put.text
    assert put.json()["path"] == "/sandbox/deep/dir/data.bin" and put.json()["size"] == 7
    assert alice_sessions.get(sid, "/sandbox/deep/dir/data.bin").content == b"\x00\xffbytes"
    assert alice_sessions.get(sid, "missing.txt").status_code == 404
    assert alice_sessions.get(sid, "/etc").status_code == 400
    assert alice_sessions.get(sid, "/proc/1/environ").status_code == 400
    assert alice_sessions.put(sid, "/etc/hostname", b"x").status_code == 403
    assert alice_sessions.get(sid, "deep/dir/data.bin", max_bytes=3).status_code == 413
    alice_sessions.exec(sid, ["chmod", "000", "deep/dir/data.bin"])
    assert alice_sessions.get(sid, "deep/dir/data.bin").status_code == 403


@live
def test_bad_input_gets_a_clear_400(alice_sessions, alices_session):
    sid = alices_session["id"]
    for body in (
        {"cmd": "ls"},
        {"cmd": []},
        {"cmd": ["ls", 3]},
        {"cmd": ["ls"], "timeout_s": 10**9},
        {"cmd": ["ls"], "env": {"1BAD": "x"}},
        {"cmd": ["ls"], "input": "a", "input_base64": "YQ=="},
        {"cmd": ["ls"], "surprise": 1},
    ):
        response = alice_sessions.http.post(f"{alice_sessions.base}{sid}/exec/", json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
    assert alice_sessions.create(memory_mb=10**9).status_code == 400
    assert alice_sessions.create(image="evil:latest").status_code == 400


@live
def test_bobs_requests_for_alices_session_are_404_everywhere(alice_sessions, bob_sessions, alices_session):
    sid = alices_session["id"]
    base = bob_sessions.base + sid
    assert bob_sessions.http.get(base + "/", timeout=30).status_code == 404
    assert bob_sessions.exec(sid, ["ls"]).status_code == 404
    assert bob_sessions.get(sid, "x").status_code == 404
    assert bob_sessions.put(sid, "x", b"x").status_code == 404
    assert bob_sessions.http.get(base + "/execs/", timeout=30).status_code == 404
    assert bob_sessions.http.delete(base + "/", timeout=30).status_code == 404
    assert Session.objects.get(pk=sid).status == "ready"


@live
def test_every_step_is_in_the_transcript_and_an_ended_session_refuses_execs(alice_sessions, alices_session):
    sid = alices_session["id"]
    alice_sessions.exec(sid, ["echo", "one"], env={"SECRET_TOKEN": "hunter2"})
    alice_sessions.put(sid, "f.txt", b"abc")
    transcript = alice_sessions.http.get(f"{alice_sessions.base}{sid}/execs/", timeout=30).json()
    kinds = [(step["seq"], step["kind"]) for step in transcript["steps"]]
    assert kinds == [(1, "exec"), (2, "write_file")]
    assert transcript["steps"][0]["env_names"] == ["SECRET_TOKEN"]
    assert "hunter2" not in str(transcript)
    assert alice_sessions.http.delete(f"{alice_sessions.base}{sid}/", timeout=30).status_code == 202
    ended = alice_sessions.exec(sid, ["echo", "late"])
    assert ended.status_code == 409 and ended.json()["end_reason"] == "deleted"
    assert Step.objects.filter(session_id=sid).count() == 2
