"""The host's end of a session agent against hostile bytes: ``ReplyParser`` fed what a program of the
session could write to the agent's stdout, and ``AgentLink`` with a real agent in a real session
sandbox whose programs kill the agent or write forged frames to its stdout (``/proc/<agent>/fd/1``).

What must hold: anything that is not a well-formed reply to a pending request, within that request's
limit, breaks the link (``ProtocolError`` in the parser); the requests in flight then fail with
``AgentLost`` at once, and the next request starts a new agent that works.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from apps.sandboxing.agent_link import MAX_REPLY_HEADER, AgentLink, AgentLost, Pending, ReplyParser
from apps.sandboxing.policy import ENVIRONMENT, Profile, runtime_for
from apps.sandboxing.sandbox import Sandbox
from apps.sandboxing.streams import ProtocolError
from apps.sandboxing.tests.conftest import small_limits
from tests.stack import wait_until

CAP = 64 * 1024


def frame(header: dict | bytes, *blobs: bytes) -> bytes:
    """A reply frame as the agent writes it; ``header`` as raw bytes for a malformed one."""
    if isinstance(header, dict):
        header = json.dumps({**header, "blobs": header.get("blobs", [len(blob) for blob in blobs])}).encode()
    return struct.pack(">I", len(header)) + header + b"".join(blobs)


def parser_for(**limits: int) -> ReplyParser:
    """A parser whose pending requests are ``limits`` (id -> blob limit); any other id is no request."""

    def limit_of(reply_id: int) -> int:
        if str(reply_id) not in limits:
            raise ProtocolError(f"a reply to no request ({reply_id})")
        return limits[str(reply_id)]

    return ReplyParser(limit_of)


# --- ReplyParser: bytes alone ----------------------------------------------------------------------


def test_a_reply_split_into_single_bytes_is_put_back_together():
    parser = parser_for(**{"7": 10})
    frames = []
    for byte in frame({"id": 7, "returncode": 0}, b"out", b"err"):
        frames += parser.feed(bytes([byte]))
    assert frames == [({"id": 7, "returncode": 0, "blobs": [3, 3]}, [b"out", b"err"])]


def test_two_replies_in_one_read_are_both_delivered():
    parser = parser_for(**{"1": 5, "2": 5})
    frames = parser.feed(frame({"id": 1}, b"a") + frame({"id": 2}, b"bb"))
    assert [(header["id"], blobs) for header, blobs in frames] == [(1, [b"a"]), (2, [b"bb"])]


def test_an_oversized_header_is_refused_from_its_length_alone():
    parser = parser_for(**{"1": CAP})
    with pytest.raises(ProtocolError, match="too large"):
        parser.feed(struct.pack(">I", MAX_REPLY_HEADER + 1))  # nothing after it is waited for
    with pytest.raises(ProtocolError, match="too large"):
        parser_for().feed(b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    "header",
    [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b"{}", b'{"id": "1"}', b'{"id": 1.0}', b'{"id": null}'],
)
def test_a_header_that_is_not_a_json_object_with_an_integer_id_breaks_the_link(header):
    with pytest.raises(ProtocolError):
        parser_for(**{"1": CAP}).feed(frame(header))


@pytest.mark.parametrize(
    "blobs", [-1, "3", {"a": 1}, [-1], [1.5], ["1"], [None], [True, "x"]], ids=lambda blobs: repr(blobs)
)
def test_blob_lengths_that_are_not_a_list_of_non_negative_integers_break_the_link(blobs):
    with pytest.raises(ProtocolError):
        parser_for(**{"1": CAP}).feed(frame(json.dumps({"id": 1, "blobs": blobs}).encode()))


def test_blobs_over_the_requests_limit_break_the_link_before_any_of_their_bytes_arrive():
    parser = parser_for(**{"1": 10})
    with pytest.raises(ProtocolError, match="malformed"):
        parser.feed(frame(json.dumps({"id": 1, "blobs": [6, 5]}).encode()))
    with pytest.raises(ProtocolError):
        parser_for(**{"1": 10}).feed(frame(json.dumps({"id": 1, "blobs": [2**62]}).encode()))
    assert parser_for(**{"1": 10}).feed(frame({"id": 1}, b"12345", b"67890"))  # exactly the limit is fine


def test_a_reply_to_an_unknown_id_breaks_the_link():
    with pytest.raises(ProtocolError, match="no request"):
        parser_for(**{"1": CAP}).feed(frame({"id": 2}))
    with pytest.raises(ProtocolError, match="no request"):
        parser_for(**{"1": CAP}).feed(frame({"id": 10**40}))


def test_a_deeply_nested_header_breaks_the_link_like_any_other_bad_header():
    with pytest.raises(ProtocolError):
        parser_for(**{"1": CAP}).feed(frame(b"[" * 30000 + b"]" * 30000))


def test_a_second_reply_to_one_request_is_a_reply_to_no_request():
    """The link drops a request from its pending table when its reply comes: a second reply then has
    no request (``AgentLink._blob_limit``), which breaks the link."""
    link = AgentLink(sandbox=None)
    link.pending[5] = pending = Pending(blob_limit=CAP)
    parser = ReplyParser(link._blob_limit)
    for header, blobs in parser.feed(frame({"id": 5, "returncode": 0}, b"x")):
        link._deliver(header, blobs)
    assert pending.done.is_set() and pending.header["returncode"] == 0
    with pytest.raises(ProtocolError, match="no request"):
        parser.feed(frame({"id": 5, "returncode": 1}))


# --- AgentLink: a real agent in a real session sandbox ------------------------------------------------


@pytest.fixture
def link():
    """An agent link to a new session sandbox (the session profile: /sandbox writable and exec-permitted)."""
    limits = small_limits(pids=256, nofile=1024, tmpfs_mb=64, tmpfs_inodes=4096, output_cap_bytes=CAP)
    profile = Profile(image=runtime_for("python").image, limits=limits, session=True)
    sandbox = Sandbox.create(profile, run_id=f"agent-link-{uuid.uuid4().hex[:8]}")
    agent = AgentLink(sandbox)
    try:
        yield agent
    finally:
        agent.close()
        sandbox.kill()
        sandbox.remove()


def execute(link: AgentLink, argv: list[str], *, timeout: float = 10, answer_s: float = 40, stdin: bytes | None = None):
    request = {
        "op": "exec",
        "argv": argv,
        "cwd": "/sandbox",
        "env": dict(ENVIRONMENT),
        "timeout": timeout,
        "cap": CAP,
        "has_input": stdin is not None,
    }
    header, blobs = link.request(request, [stdin] if stdin is not None else [], timeout_s=answer_s, blob_limit=CAP)
    return header, blobs


def agent_pid(link: AgentLink) -> int:
    """The pid of the agent that runs the exec (its parent)."""
    header, blobs = execute(link, ["sh", "-c", "echo $PPID"])
    assert header.get("returncode") == 0, header
    return int(blobs[0])


def test_the_agent_answers_execs_files_and_pings(link):
    assert link.request({"op": "ping"}, [], timeout_s=30, blob_limit=0)[0]["pong"] is True
    header, blobs = execute(link, ["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in")
    assert (header["returncode"], blobs) == (3, [b"in", b"err\n"])
    written, _ = link.request({"op": "write", "path": "/sandbox/f"}, [b"data"], timeout_s=30, blob_limit=0)
    assert written["size"] == 4
    read, blobs = link.request({"op": "read", "path": "/sandbox/f", "max": 3}, [], timeout_s=30, blob_limit=3)
    assert read["error"] == "too_large" and blobs == []  # the agent keeps to the limit it was given


def test_an_agent_killed_mid_request_fails_every_request_in_flight_and_the_next_one_gets_a_new_agent(link):
    first = agent_pid(link)
    with ThreadPoolExecutor(1) as pool:
        bystander = pool.submit(execute, link, ["sleep", "3"])
        with pytest.raises(AgentLost):
            execute(link, ["sh", "-c", "kill -9 $PPID; sleep 1"])
        with pytest.raises(AgentLost):
            bystander.result()
    header, blobs = execute(link, ["echo", "again"])
    assert (header["returncode"], blobs[0]) == (0, b"again\n")
    assert agent_pid(link) != first


# A program that writes bytes (base64 in argv) to the agent's stdout, as a forger in the session would.
FORGE = (
    "import base64, os, sys\n"
    "fd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
    "os.write(fd, base64.b64decode(sys.argv[1]))\n"
)


def forge(link: AgentLink, data: bytes):
    """Run the forger with ``data``; returns what the request got (a header) or the ``AgentLost``."""
    try:
        return execute(link, ["python3", "-c", FORGE, base64.b64encode(data).decode()], answer_s=20)[0]
    except AgentLost as lost:
        return lost


def the_link_recovers(link: AgentLink, old_agent: int) -> None:
    """The next request after a broken link starts a new agent, which answers."""
    wait_until(lambda: link.raw is None, timeout=20, what="the broken link to be closed")
    header, blobs = execute(link, ["echo", "fresh"])
    assert (header["returncode"], blobs[0]) == (0, b"fresh\n")
    assert agent_pid(link) != old_agent


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(struct.pack(">I", 2**31), id="oversized header"),
        pytest.param(frame(b"{not json"), id="non-JSON header"),
        pytest.param(frame({"id": 987654}), id="reply to an unknown id"),
        pytest.param(frame({"id": 0, "ready": True}), id="a second hello"),
        pytest.param(frame(b"\x00" * 100), id="NUL bytes"),
    ],
)
def test_a_forged_frame_on_the_agents_stdout_breaks_the_link_and_the_next_request_gets_a_new_agent(link, forged):
    old = agent_pid(link)
    got = forge(link, forged)
    assert isinstance(got, AgentLost), got
    the_link_recovers(link, old)


def test_a_forged_reply_with_blobs_over_the_requests_limit_breaks_the_link(link):
    old = agent_pid(link)
    own_id = link.next_id  # the forger's own request gets this id
    got = forge(link, frame(json.dumps({"id": own_id, "blobs": [CAP + 1]}).encode()))
    assert isinstance(got, AgentLost), got
    the_link_recovers(link, old)


def test_a_forged_reply_to_the_forgers_own_request_then_the_real_one_is_a_second_reply(link):
    """A program may answer its own exec (its output is its own to make up); the agent's real reply
    then comes second, which breaks the link, and the next request gets a new agent."""
    old = agent_pid(link)
    own_id = link.next_id
    got = forge(link, frame({"id": own_id, "returncode": 42}, b"made up", b""))
    assert not isinstance(got, AgentLost) and got["returncode"] == 42
    the_link_recovers(link, old)


def test_a_forged_deeply_nested_header_breaks_the_link_and_the_next_request_gets_a_new_agent(link):
    old = agent_pid(link)
    got = forge(link, frame(b"[" * 30000 + b"]" * 30000))
    assert isinstance(got, AgentLost), got
    assert "did not answer in time" not in str(got)
    the_link_recovers(link, old)


def test_a_late_reply_to_a_request_the_host_gave_up_on_does_not_break_the_link(link):
    with pytest.raises(AgentLost, match="in time"):
        # The command takes 3 s; the host gives up waiting after 1 s. The agent replies, late.
        execute(link, ["sleep", "3"], answer_s=1)
    header, _ = execute(link, ["sh", "-c", "sleep 3; echo after"])  # the late reply arrives meanwhile
    assert (header["returncode"], header.get("error")) == (0, None)
