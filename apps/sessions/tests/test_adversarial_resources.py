"""Adversarial cases 1-9, 37 and the host's side for sessions: what a session's commands do to their
own sandbox (fork bombs, memory, full disks, floods, huge arguments, killing everything) ends the
command or the session with a clear answer, never a 5xx or a hang, and leaves the host, the session
host and other sessions unaffected. Through the real API, a real session host and real sandboxes.

alice's shared session takes the cases that leave it as it was; the cases that may end a sandbox
(fork bomb, memory, ``kill -9 -1``) each get a session of their own.
"""

# ruff: noqa: F811 (pytest injects the fixtures imported from adversarial.py by name)
from __future__ import annotations

import base64
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from apps.sandboxing import engine
from apps.sandboxing.policy import LABEL_RUN
from apps.sessions.models import Session
from apps.sessions.tests.adversarial import alice, bob, end, people, run, start  # noqa: F401 (fixtures)
from apps.sessions.tests.test_sessions_live import Api
from tests.stack import live_sessions_stack, wait_until  # noqa: F401 (the fixture)

# django_db (not transactional): it makes pytest-django set up the test database, and each test's
# own transaction is rolled back (the tests write nothing through it; the stack commits its own).
pytestmark = [pytest.mark.docker, pytest.mark.django_db]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def sid(alice):
    """alice's shared session."""
    session = start(alice, metadata={"case": "resources"})
    yield session["id"]
    end(alice, session["id"])


@pytest.fixture
def own_session(alice):
    """A session of alice's for one case that may end it; ended (if still live) after the test."""
    made = []

    def make(**body) -> str:
        made.append(start(alice, **body)["id"])
        return made[-1]

    yield make
    for session_id in made:
        alice.http.delete(f"{alice.base}{session_id}/", timeout=30)


def detail(api: Api, session_id: str) -> dict:
    response = api.http.get(f"{api.base}{session_id}/", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def containers_of(session_id: str) -> list:
    """The engine's containers of one session, running or not (``docker ps -a``)."""
    return engine.client().containers.list(all=True, filters={"label": f"{LABEL_RUN}=session-{session_id}"})


def processes(api: Api, session_id: str) -> str:
    """Every command line in the sandbox, one a line (arguments joined by spaces)."""
    listing = run(api, session_id, ["sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"])
    return listing["stdout"]


def the_session_works(api: Api, session_id: str) -> bool:
    result = run(api, session_id, ["echo", "alive"])
    return result["stdout"] == "alive\n"


# --- 1: fork bombs -----------------------------------------------------------------------------------


def test_a_shell_fork_bomb_ends_with_its_exec_and_other_sessions_and_the_host_are_unaffected(
    alice,
    sid,
    own_session,
    live_sessions_stack,  # noqa: F811
):
    bombed = own_session()
    with ThreadPoolExecutor(2) as pool:
        bomb = pool.submit(alice.exec, bombed, ["bash", "-c", ":(){ :|:& };:"], timeout_s=2)
        # While it runs: the bystander session answers, and so does the bombed session (maybe refusing).
        assert the_session_works(alice, sid)
        meanwhile = alice.exec(bombed, ["echo", "meanwhile"], timeout_s=2)
        answered = bomb.result()
    assert answered.status_code == 200, answered.text
    assert meanwhile.status_code in (200, 409), meanwhile.text

    def settled():
        return detail(alice, bombed)["status"] == "ended" or the_session_works(alice, bombed)

    # Under gVisor the bomb's memory may stop the whole sandbox a while after its exec ended.
    wait_until(settled, timeout=30, what="the bombed session to end or work again")
    session = detail(alice, bombed)
    if session["status"] == "ready":
        # The bomb is gone with its exec: the session runs commands again, with no bash left over.
        assert "bash -c :(){" not in processes(alice, bombed)
    else:
        # Its container died with it, or the default fork-bomb safety rule stopped it.
        assert session["end_reason"] in ("sandbox_exited", "safety_stopped") and session["error"], session
    assert the_session_works(alice, sid)
    live_sessions_stack.check_alive()


def test_a_python_fork_bomb_whose_children_leave_its_session_ends_with_its_exec_or_ends_the_session(
    alice,
    sid,
    own_session,
    live_sessions_stack,  # noqa: F811
):
    bombed = own_session()
    code = "import os\nwhile True:\n    try:\n        os.fork() or os.setsid()\n    except OSError:\n        pass\n"
    answered = alice.exec(bombed, ["python3", "-c", code], timeout_s=1)
    assert answered.status_code in (200, 409), answered.text
    if answered.status_code == 200:
        assert answered.json()["timed_out"] is True or answered.json()["error"] == "interrupted", answered.json()

    def settled():
        return detail(alice, bombed)["status"] == "ended" or the_session_works(alice, bombed)

    wait_until(settled, timeout=30, what="the bombed session to end or work again")
    session = detail(alice, bombed)
    if session["status"] == "ended":
        assert session["end_reason"] in ("sandbox_exited", "safety_stopped") and session["error"], session
    else:
        assert "python3 -c import os" not in processes(alice, bombed)
    assert the_session_works(alice, sid)
    live_sessions_stack.check_alive()


# --- 2: memory -------------------------------------------------------------------------------------------


def test_allocating_memory_until_it_dies_ends_the_command_or_the_session_with_a_clear_reason(alice, own_session):
    small = own_session(memory_mb=128)
    code = "chunks = []\nwhile True:\n    chunks.append(' ' * (8 << 20))\n"
    answered = alice.exec(small, ["python3", "-c", code], timeout_s=4)
    assert answered.status_code in (200, 409), answered.text
    result = answered.json()

    def settled():
        session = detail(alice, small)
        return session["status"] == "ended" or the_session_works(alice, small)

    wait_until(settled, timeout=30, what="the session to end or work again")
    session = detail(alice, small)
    if session["status"] == "ended":
        assert session["end_reason"] == "sandbox_exited", session
        assert "memory" in session["error"], session
    else:
        # The command was killed (SIGKILL: 137) or failed with MemoryError; it did not run on.
        assert answered.status_code == 200 and not result["timed_out"], result
        assert result["returncode"] in (137, 1) or result["error"] == "interrupted", result
        if result["returncode"] == 1:
            assert "MemoryError" in result["stderr"], result


# --- 7: full disks -------------------------------------------------------------------------------------

FILL = r"""
import errno, os, sys
place, n, chunk = sys.argv[1], 0, 64 << 20
while chunk >= 1 << 20:
    path = os.path.join(place, f"fill-{n}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, chunk)
        finally:
            os.close(fd)
        n += 1
    except OSError as e:
        os.unlink(path)
        if e.errno not in (errno.ENOSPC, errno.EFBIG):
            raise
        chunk //= 2
print(n)
"""


@pytest.mark.parametrize("place", ["/sandbox", "/tmp", "/dev/shm"])
def test_filling_a_writable_place_makes_writes_fail_cleanly_and_emptying_it_makes_them_work(alice, sid, place):
    run(alice, sid, ["mkdir", "-p", f"{place}/fill"])
    try:
        filling = run(alice, sid, ["python3", "-c", FILL, f"{place}/fill"], timeout_s=4)
        assert filling["returncode"] == 0 and int(filling["stdout"]) > 0, filling
        shell = run(alice, sid, ["sh", "-c", f"head -c 4194304 /dev/zero > {place}/one-more"])
        assert shell["returncode"] != 0 and "No space left" in shell["stderr"], shell
        put = alice.put(sid, f"{place}/put.bin", os.urandom(4 * MIB))
        assert (put.status_code, put.json()["code"]) == (413, "no_space"), put.text
        assert place.encode() in put.content
    finally:
        run(alice, sid, ["rm", "-rf", f"{place}/fill", f"{place}/one-more", f"{place}/put.bin"])
    assert alice.put(sid, f"{place}/put.bin", b"room again").status_code == 200
    run(alice, sid, ["rm", "-f", f"{place}/put.bin"])


# --- 5, 6: output floods ----------------------------------------------------------------------------


def test_an_output_flood_keeps_at_most_the_cap_and_says_it_was_truncated(alice, sid):
    cap = detail(alice, sid)["limits"]["output_cap_bytes"]
    flood = "import sys\nsys.stdout.buffer.write(b'y' * (3 * {cap}))\nsys.stderr.buffer.write(b'e' * {cap})\n"
    answered = alice.exec(sid, ["python3", "-c", flood.format(cap=cap)], timeout_s=4)
    assert answered.status_code == 200, answered.status_code
    result = answered.json()
    assert result["truncated"] is True and result["returncode"] == 0
    assert len(result["stdout"]) + len(result["stderr"]) <= cap
    assert len(answered.content) <= cap + 64 * 1024  # the answer is bounded too: JSON around the kept bytes
    step = alice.http.get(f"{alice.base}{sid}/execs/?after={result['seq'] - 1}", timeout=30).json()["steps"][0]
    assert step["stdout_bytes"] == 3 * cap and step["stderr_bytes"] == cap and step["truncated"] is True
    assert len(step["stdout"]) <= 64 * 1024


def test_one_huge_line_without_a_newline_and_printing_forever_are_cut_at_the_cap(alice, sid):
    cap = detail(alice, sid)["limits"]["output_cap_bytes"]
    line = run(alice, sid, ["sh", "-c", f"head -c {2 * cap} /dev/zero | tr '\\0' x"], timeout_s=4)
    assert line["truncated"] is True and len(line["stdout"]) == cap and set(line["stdout"]) == {"x"}
    forever = run(alice, sid, ["yes"], timeout_s=2)
    assert forever["timed_out"] is True and forever["truncated"] is True and forever["returncode"] is None
    assert len(forever["stdout"]) <= cap
    assert "yes" not in processes(alice, sid).split()


def test_invalid_utf8_and_nul_bytes_come_back_exactly_and_no_server_error(alice, sid):
    raw = b"\xff\xfe\x00\x80<script>alert(1)</script>\x1b[31m\x00"
    result = run(alice, sid, ["cat"], input_base64=base64.b64encode(raw).decode())
    assert base64.b64decode(result["stdout_base64"]) == raw
    assert "\ufffd" in result["stdout"]
    step = alice.http.get(f"{alice.base}{sid}/execs/?after={result['seq'] - 1}", timeout=30).json()["steps"][0]
    assert step["stdout"].startswith("\ufffd\ufffd\ufffd\ufffd") and "<script>" in step["stdout"]


def test_the_transcript_downloads_as_json_lines_with_hostile_output_in_it(alice, sid):
    run(alice, sid, ["printf", "\\377\\000<img src=x onerror=alert(1)>"])
    transcript = alice.http.get(f"{alice.base}{sid}/execs/?format=jsonl", timeout=30)
    assert transcript.status_code == 200, transcript.status_code
    lines = [json.loads(line) for line in transcript.text.splitlines()]
    assert lines and all(line["seq"] for line in lines)


# --- big payloads ------------------------------------------------------------------------------------


def test_a_50_mib_file_round_trips_byte_for_byte(alice, sid):
    content = os.urandom(50 * MIB)
    digest = hashlib.sha256(content).hexdigest()
    put = alice.put(sid, "big/fifty.bin", content)
    assert put.status_code == 200, put.text
    assert (put.json()["size"], put.json()["sha256"]) == (len(content), digest)
    assert run(alice, sid, ["sha256sum", "big/fifty.bin"])["stdout"].split()[0] == digest
    got = alice.get(sid, "big/fifty.bin")
    assert got.status_code == 200 and got.content == content
    run(alice, sid, ["rm", "-rf", "big"])


def test_a_50_mib_input_reaches_the_command_whole(alice, sid):
    content = os.urandom(50 * MIB)
    result = run(alice, sid, ["sha256sum"], input_base64=base64.b64encode(content).decode(), timeout_s=4)
    assert result["stdout"].split()[0] == hashlib.sha256(content).hexdigest()
    body = json.dumps({"cmd": ["wc", "-c"], "input": "é" * (25 * MIB), "timeout_s": 4}, ensure_ascii=False)
    text = alice.http.post(
        f"{alice.base}{sid}/exec/", data=body.encode(), headers={"Content-Type": "application/json"}, timeout=120
    )
    assert text.status_code == 200, text.text[:300]
    assert text.json()["stdout"].strip() == str(50 * MIB)


def test_an_input_over_the_file_limit_is_413_and_nothing_runs(alice, sid):
    most = detail(alice, sid)["limits"]["file_max_bytes"]
    before = detail(alice, sid)["step_count"]
    response = alice.exec(sid, ["wc", "-c"], input="x" * (most + 1))
    assert response.status_code == 413, response.text[:300]
    too_big_file = alice.put(sid, "huge.bin", b"x" * (most + 1))
    assert too_big_file.status_code == 413
    assert detail(alice, sid)["step_count"] == before


def test_a_one_mib_argv_runs_or_is_refused_clearly(alice, sid):
    spread = ["x" * (64 * 1024)] * 16  # 1 MiB in 16 arguments: within the kernel's limits
    counted = run(alice, sid, ["python3", "-c", "import sys; print(sum(map(len, sys.argv[1:])))", *spread])
    assert counted["stdout"].strip() == str(MIB)
    one = alice.exec(sid, ["echo", "y" * MIB])  # one argument over the kernel's 128 KiB per argument
    assert one.status_code in (200, 400, 413), one.text[:300]
    if one.status_code == 200:
        result = one.json()
        assert result["returncode"] is None and result["error"] and result["error_message"], result
        assert len(result["error_message"]) <= 500
    assert the_session_works(alice, sid)
    steps = alice.http.get(f"{alice.base}{sid}/execs/", timeout=30)
    assert steps.status_code == 200 and len(steps.content) < 2 * MIB  # the transcript keeps a bounded argv


# --- concurrency --------------------------------------------------------------------------------------


def test_ten_execs_in_parallel_on_one_session_each_get_their_own_answer(alice, sid):
    def one(n: int) -> tuple[int, dict]:
        api = requests.Session()
        api.headers.update(alice.http.headers)
        response = api.post(
            f"{alice.base}{sid}/exec/",
            json={"cmd": ["sh", "-c", "sleep 0.5; echo $N; echo err$N >&2"], "env": {"N": str(n)}, "timeout_s": 4},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        return n, response.json()

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(one, range(10)))
    for n, result in answers:
        assert (result["returncode"], result["stdout"], result["stderr"]) == (0, f"{n}\n", f"err{n}\n")
    assert len({result["seq"] for _, result in answers}) == 10


# --- 37: what an exec leaves running ---------------------------------------------------------------


def started_pid(api: Api, session_id: str, pid_file: str) -> int | None:
    """The pid a background shell wrote to ``pid_file`` before it exec'd its program, once written."""
    written = run(api, session_id, ["cat", pid_file])["stdout"].strip()
    return int(written) if written.isdigit() else None


def alive(api: Api, session_id: str, pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has no command line)."""
    return run(api, session_id, ["sh", "-c", 'test -s "/proc/$0/cmdline"', str(pid)])["returncode"] == 0


# Any exec's deadline, even one of an exec that ended, kills every stray (a process no exec waits
# for): in the shared session an earlier test's exec could kill these before they wrote their pid
# (the CI rehearsal of f8b6929 waited 30 s for a pid never written). Each case has a session of its
# own, writes its pid first, and the test follows that pid.


def test_a_background_process_that_ignores_sigterm_and_setsids_away_dies_at_the_execs_timeout(alice, own_session):
    sid = own_session()
    background = "trap '' TERM HUP INT; echo $$ > /tmp/bg371.pid; exec sleep 371"
    started = run(
        alice,
        sid,
        ["sh", "-c", f'setsid nohup sh -c "{background}" >/dev/null 2>&1 </dev/null &'],
        timeout_s=20,
    )
    assert started["returncode"] == 0 and not started["timed_out"]
    pid = wait_until(lambda: started_pid(alice, sid, "/tmp/bg371.pid"), timeout=30, what="the background pid")
    # A sleep of 371 s that is gone within 45 s was killed.
    wait_until(lambda: not alive(alice, sid, pid), timeout=45, what="the left-behind sleep to be killed")


def test_a_background_process_that_setsids_and_clears_its_environment_dies_at_the_execs_timeout(alice, own_session):
    sid = own_session()
    background = "echo $$ > /tmp/bg372.pid; exec env -i sleep 372"
    started = run(alice, sid, ["sh", "-c", f"setsid sh -c '{background}' >/dev/null 2>&1 </dev/null &"], timeout_s=2)
    assert started["returncode"] == 0
    try:
        pid = wait_until(lambda: started_pid(alice, sid, "/tmp/bg372.pid"), timeout=30, what="the background pid")
        wait_until(lambda: not alive(alice, sid, pid), timeout=20, what="the left-behind sleep to be killed")
    finally:
        run(alice, sid, ["pkill", "-KILL", "-f", "sleep 372"])


def test_an_exec_that_runs_longer_than_a_few_seconds_is_answered(alice, sid):
    response = alice.exec(sid, ["sleep", "7"], timeout_s=20)
    assert response.status_code == 200, response.text
    assert response.json()["returncode"] == 0


# --- the agent killed from inside -------------------------------------------------------------------


def test_an_exec_that_kills_its_agent_is_interrupted_and_the_next_exec_gets_a_new_agent(alice, sid):
    before = run(alice, sid, ["sh", "-c", "echo $PPID"])["stdout"]
    killed = run(alice, sid, ["sh", "-c", "kill -9 $PPID; sleep 1"])
    assert (killed["returncode"], killed["error"]) == (None, "interrupted"), killed
    assert killed["error_message"]
    after = run(alice, sid, ["sh", "-c", "echo $PPID"])
    assert after["returncode"] == 0 and after["stdout"] != before
    steps = alice.http.get(f"{alice.base}{sid}/execs/?after={killed['seq'] - 1}", timeout=30).json()["steps"]
    assert (steps[0]["status"], steps[0]["error"]) == ("done", "interrupted")
    assert detail(alice, sid)["status"] == "ready"


# --- kill -9 -1 and the end of a session ------------------------------------------------------------


def test_killing_every_process_from_an_exec_gets_a_clear_answer_and_the_container_goes_with_the_session(
    alice,
    own_session,
    live_sessions_stack,  # noqa: F811
):
    victim = own_session()
    killed = alice.exec(victim, ["sh", "-c", "kill -9 -1; sleep 5"], timeout_s=10)
    assert killed.status_code in (200, 409), killed.text
    if killed.status_code == 200:
        assert killed.json()["error"] == "interrupted" or killed.json()["returncode"] == 137, killed.json()
    seen = []

    def settled():
        response = alice.exec(victim, ["echo", "after"])
        seen.append(response.status_code)
        assert response.status_code in (200, 409), response.text  # never a 5xx: the test fails at once
        if response.status_code == 409:
            return detail(alice, victim)["status"] == "ended"
        return response.json()["stdout"] == "after\n"

    wait_until(settled, timeout=60, what="the session to end or work again")
    session = detail(alice, victim)
    if session["status"] == "ended":
        assert session["end_reason"] == "sandbox_exited" and session["error"], session
    end(alice, victim)
    wait_until(lambda: containers_of(victim) == [], timeout=60, what="the session's container to be removed")
    live_sessions_stack.check_alive()


def test_a_deleted_sessions_container_is_gone_from_the_engine(alice, own_session):
    doomed = own_session()
    run(alice, doomed, ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"], timeout_s=600)
    (container,) = containers_of(doomed)
    assert container.status == "running"
    end(alice, doomed)
    ended = detail(alice, doomed)
    assert (ended["status"], ended["end_reason"]) == ("ended", "deleted")
    wait_until(lambda: containers_of(doomed) == [], timeout=60, what="the session's container to be removed")
    again = alice.exec(doomed, ["echo", "late"])
    assert again.status_code == 409 and again.json()["end_reason"] == "deleted"


# --- the host parses the agent's replies as hostile ------------------------------------------------

# A program that writes a reply frame to its agent's stdout, answering its own exec before the agent
# does (argv: the request id, the reply header's extra fields as JSON).
FORGE = r"""
import json, os, struct, sys
header = json.dumps({"id": int(sys.argv[1]), **json.loads(sys.argv[2]), "blobs": [6, 0]}).encode()
fd = os.open(f"/proc/{os.getppid()}/fd/1", os.O_WRONLY)
os.write(fd, struct.pack(">I", len(header)) + header + b"forged")
"""


def first_request_id(session_id: str) -> int:
    """The agent request id of the session's next exec: the start's ping was request 1 (under gVisor
    the seccomp profile's installation came first, request 1, and the ping 2); one request a step."""
    pings = 2 if Session.objects.get(pk=session_id).sandbox_runtime == "runsc" else 1
    return Session.objects.get(pk=session_id).step_count + pings + 1


EXEC_ERRORS = {None, "not_found", "permission_denied", "bad_cwd", "user_unsupported", "too_many_processes"}
EXEC_ERRORS |= {"interrupted", "failed"}  # "failed": whatever the agent said that is not one of the codes


@pytest.mark.parametrize(
    "forged",
    [
        {"returncode": 0, "error": "x" * 100},
        {"returncode": 2**40},
        {"returncode": 0, "duration_ms": 2**40},
        {"returncode": 0, "stdout_bytes": 2**70},
    ],
    ids=["long error", "huge returncode", "huge duration", "huge byte count"],
)
def test_a_forged_reply_from_inside_the_sandbox_gets_a_clean_answer_and_a_finished_step(alice, own_session, forged):
    forger = own_session()
    request_id = first_request_id(forger)
    response = alice.exec(forger, ["python3", "-c", FORGE, str(request_id), json.dumps(forged)])
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert response.json()["error"] in EXEC_ERRORS, response.json()
    steps = alice.http.get(f"{alice.base}{forger}/execs/", timeout=30).json()["steps"]
    assert [step["status"] for step in steps] == ["done"]
    assert the_session_works(alice, forger)


def test_a_forged_reply_within_the_contract_is_taken_as_the_execs_own_output(alice, own_session):
    """A program may make up its own exec's result (it could print anything anyway); the agent's real
    reply then comes second, the link breaks, and the next exec gets a new agent."""
    forger = own_session()
    request_id = first_request_id(forger)
    result = run(alice, forger, ["python3", "-c", FORGE, str(request_id), json.dumps({"returncode": 7})])
    assert (result["returncode"], result["stdout"]) == (7, "forged")
    wait_until(lambda: the_session_works(alice, forger), timeout=30, what="a new agent to answer")
