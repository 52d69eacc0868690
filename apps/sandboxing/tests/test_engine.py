"""The connection to the Docker engine is never shared across a fork (RQ forks a horse per job)."""

import os

import pytest

from apps.sandboxing import engine

pytestmark = pytest.mark.docker


def test_a_forked_child_opens_its_own_connection_to_the_engine():
    parent_client = engine.client()
    assert parent_client.ping()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it inherited the parent's client, then leave at once
        try:
            inherited = getattr(engine._local, "client", None) is parent_client
            fresh_ok = engine.client() is not parent_client and engine.client().ping()
            os.write(write_end, b"%d%d" % (inherited, fresh_ok))
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    answer = os.read(read_end, 2)
    os.close(read_end)
    assert answer == b"01"  # nothing inherited, and a fresh client that works
    assert engine.client() is parent_client  # the parent keeps its own


def test_a_recent_answer_of_the_engine_will_do_but_a_silence_is_never_remembered(monkeypatch):
    asked = []
    answers = iter([True, False, True])

    def counted_ping():
        asked.append(1)
        return next(answers)

    monkeypatch.setattr(engine.client(), "ping", counted_ping)
    monkeypatch.setattr(engine._local, "answered_at", float("-inf"), raising=False)
    assert engine.ping(fresh_for_s=60) and len(asked) == 1
    assert engine.ping(fresh_for_s=60) and len(asked) == 1  # answered a moment ago
    assert not engine.ping() and len(asked) == 2  # without a freshness, always asked
    assert engine.ping(fresh_for_s=60) and len(asked) == 3  # the silence was not kept: asked again
