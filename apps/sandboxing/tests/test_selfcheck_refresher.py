"""A process that takes runs keeps the canary's verdict fresh in a thread: no run waits for the canary,
neither the first after the process started nor one when the verdict expires."""

import os
import threading
import time

import pytest

from apps.sandboxing import selfcheck
from tests.stack import wait_until


class Canary:
    """Stands in for the canary's run (``selfcheck._problems``): records the thread of each run."""

    def __init__(self, problems=(), takes_s: float = 0.0):
        self.problems, self.takes_s = list(problems), takes_s
        self.threads: list[str] = []

    def __call__(self, limits):
        self.threads.append(threading.current_thread().name)
        time.sleep(self.takes_s)
        return list(self.problems)


@pytest.fixture
def canary(monkeypatch):
    monkeypatch.setattr(selfcheck, "_cache", {})
    canary = Canary()
    monkeypatch.setattr(selfcheck, "_problems", canary)
    return canary


def test_a_refresher_checks_at_once_so_the_first_run_finds_the_verdict_cached(canary):
    refresher = selfcheck.Refresher(name="refresher-under-test")
    refresher.start()
    try:
        wait_until(lambda: canary.threads, 10, interval=0.01, what="the refresher's first check")
        assert selfcheck.self_check() == []
        selfcheck.require_policy()
        assert canary.threads == ["refresher-under-test"]
    finally:
        refresher.stop()


def test_a_refresher_checks_again_before_the_verdict_expires(canary, monkeypatch):
    monkeypatch.setattr(selfcheck, "CACHE_SECONDS", 1.0)
    monkeypatch.setattr(selfcheck, "REFRESH_AHEAD_SECONDS", 0.7)
    refresher = selfcheck.Refresher(name="refresher-under-test")
    refresher.start()
    try:
        wait_until(lambda: len(canary.threads) >= 3, 10, interval=0.01, what="three checks, 0.3 s apart")
        # A run between the checks never found the verdict expired: it never ran the canary itself.
        for _ in range(20):
            assert selfcheck.self_check() == []
            time.sleep(0.02)
        assert set(canary.threads) == {"refresher-under-test"}
    finally:
        refresher.stop()


def test_a_failed_verdict_is_checked_again_when_it_expires(canary, monkeypatch):
    monkeypatch.setattr(selfcheck, "FAILURE_CACHE_SECONDS", 0.3)
    canary.problems = ["the engine does not answer"]
    refresher = selfcheck.Refresher()
    refresher.start()
    try:
        wait_until(lambda: len(canary.threads) >= 2, 10, interval=0.01, what="a second check after a failure")
        with pytest.raises(selfcheck.SandboxUnavailable):
            selfcheck.require_policy()  # fails closed meanwhile
        canary.problems = []
        wait_until(lambda: selfcheck.self_check() == [], 10, interval=0.05, what="the engine passing again")
    finally:
        refresher.stop()


def test_a_run_that_finds_the_canary_running_waits_for_its_verdict_instead_of_running_another(canary):
    canary.takes_s = 0.5
    checking = threading.Thread(target=selfcheck.self_check, kwargs={"force": True}, name="first-caller")
    checking.start()
    wait_until(lambda: canary.threads, 5, interval=0.01, what="the first canary running")
    assert selfcheck.self_check() == []
    checking.join()
    assert canary.threads == ["first-caller"]


def test_a_forced_check_runs_a_canary_that_began_after_it_was_asked(canary):
    selfcheck.self_check()
    selfcheck.self_check(force=True)
    assert len(canary.threads) == 2


def test_a_stopped_refresher_waits_for_the_canary_it_is_running_and_checks_no_more(canary):
    canary.takes_s = 0.3
    refresher = selfcheck.Refresher(name="refresher-under-test")
    refresher.start()
    wait_until(lambda: canary.threads, 5, interval=0.01, what="the canary running")
    refresher.stop()
    assert not refresher._thread.is_alive()
    assert canary.threads == ["refresher-under-test"]


def test_a_verdict_is_about_one_engine(canary, settings):
    """A worker whose engine was away (here: another socket) does not take its failure for another's."""
    engine_host = settings.DOCKER_HOST
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    canary.problems = ["the engine does not answer"]
    assert selfcheck.self_check() == ["the engine does not answer"]
    settings.DOCKER_HOST = engine_host
    canary.problems = []
    assert selfcheck.self_check() == []
    assert len(canary.threads) == 2


def test_a_work_horse_forked_while_the_canary_runs_can_check_for_itself(canary):
    """With WORKER_FORK=true, RQ forks a horse per job; the refresher's thread may hold the lock at
    that moment, and is not in the child to release it."""
    canary.takes_s = 1.0
    refresher = selfcheck.Refresher()
    refresher.start()
    try:
        wait_until(lambda: canary.threads, 5, interval=0.01, what="the canary running")
        child = os.fork()
        if child == 0:  # the horse: its own canary (the stand-in, inherited), without waiting on the parent's
            code = 0 if selfcheck._checking.acquire(timeout=0.5) and selfcheck._lock.acquire(timeout=0.5) else 1
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        refresher.stop()
