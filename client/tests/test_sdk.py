"""The SDK's manners (retries, Retry-After, typed errors, request shapes) against a tiny real HTTP server.

The server (``http.server`` in a thread) answers from a script of responses and records every
request it got, so a test says what the server does and checks what the client sent. Waits are
recorded instead of slept (the client's ``sleep`` is injected): no test depends on the clock.
"""

from __future__ import annotations

import base64
import email.utils
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from crucible_client import (
    BadRequest,
    Client,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SandboxNotReady,
    ServerError,
    SessionEnded,
    Throttled,
    Unauthorized,
    Unavailable,
)
from crucible_client._transport import parse_retry_after
from crucible_client.sandboxes import output_bytes

DROP = "drop"  # a scripted "response" that closes the connection without answering


@dataclass
class Reply:
    status: int = 200
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class FakeCrucible:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self):
        self.script: list[Reply | str] = []
        self.seen: list[Seen] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                fake.seen.append(Seen(self.command, url.path, parse_qs(url.query), dict(self.headers), body))
                reply = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                if reply == DROP:
                    self.close_connection = True
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                content_type = "application/octet-stream" if reply.raw is not None else "application/json"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def replies(self, *replies: Reply | str) -> None:
        self.script = list(replies)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crucible() -> Iterator[FakeCrucible]:
    fake = FakeCrucible()
    yield fake
    fake.close()


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def client(crucible, waits) -> Client:
    """alice's client against the fake server; its waits are recorded, not slept."""
    return Client(crucible.url, "alice-token", max_retries=3, backoff_s=0.5, max_retry_wait_s=60, sleep=waits.append)


SANDBOX = {"id": "5b0c6f1e-0000-4000-8000-000000000001", "status": "ready", "end_reason": None, "error": ""}


# --- Retry-After -----------------------------------------------------------------------------------


def test_a_429_is_retried_after_the_seconds_its_retry_after_names(crucible, client, waits):
    crucible.replies(
        Reply(429, {"detail": "Too many active evaluations."}, {"Retry-After": "3"}), Reply(200, {"id": "e1"})
    )
    assert client.evaluations.get("e1") == {"id": "e1"}
    assert waits == [3.0] and len(crucible.seen) == 2


def test_a_503_with_an_http_date_waits_until_that_date(crucible, client, waits):
    later = email.utils.formatdate(time.time() + 5, usegmt=True)
    crucible.replies(Reply(503, {"detail": "No session host is running."}, {"Retry-After": later}), Reply(201, SANDBOX))
    assert client.sandboxes.create()["id"] == SANDBOX["id"]
    assert len(waits) == 1 and 0 < waits[0] <= 6


def test_a_throttled_post_is_retried_because_the_server_did_nothing(crucible, client, waits):
    crucible.replies(Reply(429, {"detail": "Over the session quota."}, {"Retry-After": "1"}), Reply(201, SANDBOX))
    client.sandboxes.create()
    assert [seen.method for seen in crucible.seen] == ["POST", "POST"] and waits == [1.0]


def test_a_retry_after_longer_than_the_client_will_wait_is_raised_at_once(crucible, client, waits):
    crucible.replies(Reply(429, {"detail": "Queue full."}, {"Retry-After": "3600"}))
    with pytest.raises(Throttled) as error:
        client.evaluations.submit("print(1)")
    assert error.value.retry_after == 3600 and error.value.message == "Queue full."
    assert waits == [] and len(crucible.seen) == 1


def test_throttling_that_never_ends_gives_up_after_max_retries(crucible, client, waits):
    crucible.replies(Reply(503, {"detail": "The kill switch is engaged."}, {"Retry-After": "2"}))
    with pytest.raises(Unavailable) as error:
        client.sandboxes.list()
    assert error.value.status == 503 and "kill switch" in error.value.message
    assert waits == [2.0, 2.0, 2.0] and len(crucible.seen) == 4


def test_a_429_without_retry_after_backs_off_exponentially(crucible, client, waits):
    crucible.replies(Reply(429, {"detail": "slow down"}), Reply(429, {"detail": "slow down"}), Reply(200, []))
    client.evaluations.artifacts("e1")
    assert len(waits) == 2 and 0 <= waits[0] <= 0.5 and 0 <= waits[1] <= 1.0


@pytest.mark.parametrize(
    ("header", "seconds"), [("10", 10.0), (" 2.5 ", 2.5), ("-4", 0.0), ("soon", None), ("", None), (None, None)]
)
def test_retry_after_is_read_as_seconds_or_not_at_all(header, seconds):
    assert parse_retry_after(header) == seconds


# --- connection errors: only what is safe to send twice -------------------------------------------


def test_a_dropped_connection_is_retried_for_a_get(crucible, client, waits):
    crucible.replies(DROP, Reply(200, SANDBOX))
    assert client.sandboxes.get(SANDBOX["id"])["status"] == "ready"
    assert len(crucible.seen) == 2 and len(waits) == 1


def test_a_dropped_connection_is_never_retried_for_an_exec(crucible, client, waits):
    crucible.replies(DROP, Reply(200, {"returncode": 0}))
    with pytest.raises(ConnectionFailed) as error:
        client.sandboxes.exec(SANDBOX["id"], ["rm", "-rf", "build"])
    assert str(error.value).startswith(f"cannot reach {crucible.url}")
    assert len(crucible.seen) == 1 and waits == []


def test_a_submission_with_an_idempotency_key_is_retried_with_the_same_key(crucible, client):
    crucible.replies(DROP, Reply(201, {"id": "e1", "status": "queued"}))
    assert client.evaluations.submit("print(1)", idempotency_key="k-42")["id"] == "e1"
    assert [seen.headers.get("Idempotency-Key") for seen in crucible.seen] == ["k-42", "k-42"]


def test_a_submission_without_a_key_is_not_retried(crucible, client):
    crucible.replies(DROP, Reply(201, {"id": "e1"}))
    with pytest.raises(ConnectionFailed):
        client.evaluations.submit("print(1)")
    assert len(crucible.seen) == 1


def test_a_bad_gateway_is_retried_for_a_file_write_but_not_for_an_exec(crucible, client):
    crucible.replies(Reply(502, {"detail": "bad gateway"}), Reply(200, {"path": "/sandbox/a", "size": 1}))
    assert client.sandboxes.write_file(SANDBOX["id"], "a", b"x")["size"] == 1
    assert len(crucible.seen) == 2
    crucible.seen.clear()
    crucible.replies(Reply(502, {"detail": "bad gateway"}), Reply(200, {"returncode": 0}))
    with pytest.raises(ServerError):
        client.sandboxes.exec(SANDBOX["id"], ["true"])
    assert len(crucible.seen) == 1


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error_class", "message", "code"),
    [
        (
            Reply(400, {"memory_mb": ["Must be between 16 and 2048."]}),
            BadRequest,
            "memory_mb: Must be between 16 and 2048.",
            None,
        ),
        (Reply(401, {"detail": "Invalid token."}), Unauthorized, "Invalid token.", None),
        (Reply(404, {"detail": "Not found."}), NotFound, "Not found.", None),
        (Reply(413, {"detail": "Too large: code."}), PayloadTooLarge, "Too large: code.", None),
        (Reply(500, raw=b"<h1>Server Error</h1>"), ServerError, "<h1>Server Error</h1>", None),
    ],
)
def test_error_statuses_become_typed_exceptions_with_the_servers_message(
    crucible, client, reply, error_class, message, code
):
    crucible.replies(reply)
    with pytest.raises(error_class) as error:
        client.evaluations.submit("print(1)", memory_mb=99999)
    assert (error.value.status, error.value.message, error.value.code) == (reply.status, message, code)
    assert str(error.value) == f"HTTP {reply.status}: {message}"


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (404, "not_found", NotFound),
        (400, "is_a_directory", BadRequest),
        (403, "permission_denied", Forbidden),
        (413, "too_large", PayloadTooLarge),
    ],
)
def test_file_errors_carry_the_servers_code(crucible, client, status, code, error_class):
    crucible.replies(Reply(status, {"detail": f"/sandbox/notes.txt: {code}", "code": code}))
    with pytest.raises(error_class) as error:
        client.sandboxes.read_file(SANDBOX["id"], "notes.txt")
    assert error.value.code == code and "notes.txt" in error.value.message


def test_a_sandbox_route_of_an_ended_session_is_session_ended_with_its_reason(crucible, client):
    crucible.replies(Reply(409, {"detail": "The session has ended.", "status": "ended", "end_reason": "idle_timeout"}))
    with pytest.raises(SessionEnded) as error:
        client.sandboxes.exec(SANDBOX["id"], ["ls"])
    assert error.value.status == 409 and error.value.end_reason == "idle_timeout"


# --- what the client sends ------------------------------------------------------------------------


def test_the_token_goes_in_the_authorization_header_and_never_in_repr(crucible, client):
    crucible.replies(Reply(200, {"id": "e1"}))
    client.evaluations.get("e1")
    assert crucible.seen[0].headers["Authorization"] == "Token alice-token"
    assert "alice-token" not in repr(client)


def test_url_and_token_come_from_the_environment(crucible, monkeypatch):
    monkeypatch.setenv("CRUCIBLE_URL", crucible.url)
    monkeypatch.setenv("CRUCIBLE_TOKEN", "from-env")
    crucible.replies(Reply(200, {"id": "e1"}))
    Client().evaluations.get("e1")
    assert crucible.seen[0].headers["Authorization"] == "Token from-env"


def test_an_id_cannot_leave_its_route(crucible, client):
    crucible.replies(Reply(404, {"detail": "Not found."}))
    with pytest.raises(NotFound):
        client.evaluations.get("../../admin")
    assert crucible.seen[0].path == "/api/v1/evaluations/..%2F..%2Fadmin/"


def test_exec_sends_text_input_as_text_and_bytes_as_base64(crucible, client):
    crucible.replies(Reply(200, {"returncode": 0, "stdout": "", "stderr": ""}))
    client.sandboxes.exec(SANDBOX["id"], ["cat"], input="héllo", env={"A": "1"}, cwd="src", timeout_s=5, user="sandbox")
    client.sandboxes.exec(SANDBOX["id"], ["cat"], input=b"\xc3\x28\x00")
    first, second = crucible.seen[0].json(), crucible.seen[1].json()
    assert first == {
        "cmd": ["cat"],
        "input": "héllo",
        "env": {"A": "1"},
        "cwd": "src",
        "timeout_s": 5,
        "user": "sandbox",
    }
    assert second == {"cmd": ["cat"], "input_base64": base64.b64encode(b"\xc3\x28\x00").decode()}
    assert crucible.seen[0].path == f"/api/v1/sandboxes/{SANDBOX['id']}/exec/"


def test_output_that_is_not_utf8_is_read_from_its_base64():
    result = {"stdout": "\ufffd(", "stdout_base64": base64.b64encode(b"\xc3(").decode(), "stderr": "plain"}
    assert output_bytes(result, "stdout") == b"\xc3(" and output_bytes(result, "stderr") == b"plain"


def test_files_travel_as_raw_bytes(crucible, client):
    crucible.replies(Reply(200, {"path": "/sandbox/a b.bin", "size": 3, "sha256": "x", "seq": 1}))
    client.sandboxes.write_file(SANDBOX["id"], "a b.bin", b"\x00\xff\x01")
    put = crucible.seen[0]
    assert (put.method, put.query, put.body) == ("PUT", {"path": ["a b.bin"]}, b"\x00\xff\x01")
    crucible.replies(Reply(200, raw=b"\x00\xff\x01"))
    assert client.sandboxes.read_file(SANDBOX["id"], "a b.bin", max_bytes=1024) == b"\x00\xff\x01"
    assert crucible.seen[1].query == {"path": ["a b.bin"], "max_bytes": ["1024"]}


def test_lists_follow_the_pages(crucible, client):
    crucible.replies(
        Reply(200, {"count": 3, "next": "?page=2", "previous": None, "results": [{"id": "1"}, {"id": "2"}]}),
        Reply(200, {"count": 3, "next": None, "previous": "?page=1", "results": [{"id": "3"}]}),
    )
    assert [s["id"] for s in client.sandboxes.list(status="ready", limit=None)] == ["1", "2", "3"]
    assert [seen.query for seen in crucible.seen] == [
        {"status": ["ready"], "page": ["1"]},
        {"status": ["ready"], "page": ["2"]},
    ]


def test_create_waits_for_a_starting_sandbox(crucible, client, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    crucible.replies(
        Reply(201, {**SANDBOX, "status": "starting"}),
        Reply(200, {**SANDBOX, "status": "starting"}),
        Reply(200, SANDBOX),
    )
    assert client.sandboxes.create(language="python", memory_mb=256)["status"] == "ready"
    assert crucible.seen[0].json() == {"language": "python", "memory_mb": 256}
    assert [seen.method for seen in crucible.seen] == ["POST", "GET", "GET"]


def test_a_sandbox_that_could_not_be_set_up_is_not_ready_with_its_reason(crucible, client):
    crucible.replies(Reply(201, {**SANDBOX, "status": "ended", "end_reason": "error", "error": "runsc is missing"}))
    with pytest.raises(SandboxNotReady) as error:
        client.sandboxes.create()
    assert error.value.end_reason == "error" and "runsc is missing" in str(error.value)


def test_an_exec_cut_off_midway_is_not_sent_again(crucible, client, waits):
    crucible.replies(Reply(503, {"detail": "the session host went away", "code": "interrupted"}), Reply(200, {}))
    with pytest.raises(Unavailable) as error:
        client.sandboxes.exec(SANDBOX["id"], ["make", "install"])
    assert error.value.code == "interrupted" and len(crucible.seen) == 1 and waits == []
