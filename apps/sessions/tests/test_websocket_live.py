"""The session WebSocket against a real Daphne, a real session host and a real sandbox (tests/stack.py):
an exec through the API appears on the stream when it starts and again when it is done, and ending the
session ends the stream."""

from __future__ import annotations

import json

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from apps.accounts.models import ApiToken
from tests.stack import live_sessions_stack  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def messages_until_closed(socket) -> list[dict]:
    received = []
    try:
        while True:
            received.append(json.loads(socket.recv(timeout=60)))
    except ConnectionClosed:
        return received


def test_alice_watches_her_exec_start_and_finish_then_the_end(live_sessions_stack, alice, bob):  # noqa: F811
    base = live_sessions_stack.url
    http = requests.Session()
    key = ApiToken.issue(alice, "watch")[1]
    http.headers["Authorization"] = f"Token {key}"
    created = http.post(f"{base}/api/v1/sandboxes/", json={}, timeout=60)
    assert created.status_code == 201 and created.json()["status"] == "ready", created.text
    sid = created.json()["id"]
    ws_base = base.replace("http://", "ws://")

    bob_key = ApiToken.issue(bob, "peek")[1]
    with connect(f"{ws_base}/ws/sandboxes/{sid}/", additional_headers={"Authorization": f"Token {bob_key}"}) as bobs:
        with pytest.raises(ConnectionClosed) as refused:
            bobs.recv(timeout=30)
        assert refused.value.rcvd.code == 4404

    with connect(
        f"{ws_base}/ws/sandboxes/{sid}/?after=0", additional_headers={"Authorization": f"Token {key}"}
    ) as socket:
        assert json.loads(socket.recv(timeout=30)) == {"type": "status", "status": "ready"}
        result = http.post(
            f"{base}/api/v1/sandboxes/{sid}/exec/",
            json={"cmd": ["sh", "-c", "echo hello; echo oops >&2; exit 4"]},
            timeout=60,
        ).json()
        assert result["returncode"] == 4 and result["seq"] == 1
        started = json.loads(socket.recv(timeout=30))
        done = json.loads(socket.recv(timeout=30))
        assert (started["type"], started["step"]["seq"], started["step"]["status"]) == ("step", 1, "running")
        assert started["step"]["cmd"] == ["sh", "-c", "echo hello; echo oops >&2; exit 4"]
        assert (done["step"]["seq"], done["step"]["status"]) == (1, "done")
        assert (done["step"]["returncode"], done["step"]["stdout"], done["step"]["stderr"]) == (4, "hello\n", "oops\n")

        assert http.delete(f"{base}/api/v1/sandboxes/{sid}/", timeout=30).status_code == 202
        rest = messages_until_closed(socket)
        assert rest[-1] == {"type": "end", "status": "ended", "end_reason": "deleted", "error": ""}
        assert all(message["type"] != "step" for message in rest)  # step 1 is not sent twice
        assert socket.close_code == 1000
