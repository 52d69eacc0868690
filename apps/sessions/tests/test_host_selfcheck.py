"""A session host keeps the sandbox self-check's verdict fresh from its start, so a session's start
never waits for the canary."""

import uuid

import pytest

from apps.sandboxing import selfcheck
from apps.sessions.host import SessionHost
from tests.stack import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_session_host_runs_the_canary_when_it_starts_and_stops_its_refresher_with_it(monkeypatch):
    monkeypatch.setattr(selfcheck, "_cache", {})
    ran_in = []
    monkeypatch.setattr(
        selfcheck, "_problems", lambda limits: ran_in.append(selfcheck.threading.current_thread().name) or []
    )
    name = f"host-{uuid.uuid4().hex[:6]}"
    host = SessionHost(name).start()
    try:
        wait_until(lambda: ran_in, 10, interval=0.02, what="the canary at the host's start")
        assert ran_in == [f"sandbox-selfcheck-{name}"]
        assert selfcheck.self_check() == [] and len(ran_in) == 1  # a session's start reads it cached
    finally:
        host.stop()
    assert not host.policy_refresher._thread.is_alive()
