"""What the runner's control calls ask while a program runs: a request made through the services is
seen within ``CONTROL_POLL_S`` (its hint in Redis says to read the row), the row is read anyway at
least every ``ROW_READ_EVERY_S``, and when Redis cannot say, every look reads the row."""

from __future__ import annotations

import time

import pytest
import redis

from apps.evaluations import control_hints, services
from apps.evaluations import controller as control_module
from apps.evaluations.controller import CONTROL_POLL_S, Controller
from apps.evaluations.models import Control, Evaluation, Status
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.tests.factories import make_evaluation
from apps.evaluations.tests.helpers import RuleThatFired
from apps.sandboxing.outcomes import Command
from crucible import redis_clients

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(alice):
    return make_evaluation(alice, status=Status.RUNNING, attempts=1)


def controller_for(evaluation, **kwargs) -> Controller:
    return Controller(evaluation, OutputRecorder(evaluation.pk), **kwargs)


def test_a_run_claimed_a_moment_ago_asks_nothing_until_its_turn(running, django_assert_num_queries):
    control = controller_for(running, read_at=time.monotonic())
    with django_assert_num_queries(0):
        assert control() is None  # the claim wrote the row a moment ago


def test_alices_cancel_is_seen_at_the_next_look_and_quiet_looks_ask_redis_only(
    running, alice, django_assert_num_queries, django_capture_on_commit_callbacks
):
    control = controller_for(running, read_at=time.monotonic())
    time.sleep(CONTROL_POLL_S)
    with django_assert_num_queries(0):
        assert control() is None  # no hint: the row is not read
    with django_capture_on_commit_callbacks(execute=True):  # the hint goes once the request is committed
        services.cancel(running, actor=alice)
    time.sleep(CONTROL_POLL_S)
    with django_assert_num_queries(1):
        assert control() is Command.CANCEL
    with django_capture_on_commit_callbacks(execute=True):  # a stronger request later: seen the same way
        services.stop(running, actor=alice)
    time.sleep(CONTROL_POLL_S)
    with django_assert_num_queries(1):
        assert control() is Command.STOP_KEEPING_EVIDENCE


def test_a_request_whose_hint_was_lost_is_seen_when_the_row_is_read_anyway(running, monkeypatch):
    monkeypatch.setattr(control_module, "ROW_READ_EVERY_S", 0.5)
    control = controller_for(running, read_at=time.monotonic())
    running.request_control(Control.CANCEL)  # on the row only, as if Redis had lost the hint
    time.sleep(CONTROL_POLL_S)
    assert control() is None
    time.sleep(0.5)
    assert control() is Command.CANCEL


def test_when_redis_cannot_say_every_look_reads_the_row(running, monkeypatch, django_assert_num_queries):
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(redis_clients, "default", lambda: unreachable)
    assert control_hints.count(running.pk) is None
    control = controller_for(running, read_at=time.monotonic())
    time.sleep(CONTROL_POLL_S)
    with django_assert_num_queries(1):
        assert control() is None
    running.request_control(Control.STOP)
    time.sleep(CONTROL_POLL_S)
    assert control() is Command.STOP_KEEPING_EVIDENCE


def test_a_row_handed_back_carrying_a_request_is_read_at_the_first_call(alice, django_assert_num_queries):
    handed_back = make_evaluation(alice, status=Status.RUNNING, attempts=1, control=Control.CANCEL)
    control = controller_for(handed_back, read_at=time.monotonic())
    with django_assert_num_queries(1):
        assert control() is Command.CANCEL  # it never starts


def test_without_a_known_moment_the_first_call_reads_the_row(running, django_assert_num_queries):
    running.request_control(Control.STOP)
    control = controller_for(running)
    with django_assert_num_queries(1):
        assert control() is Command.STOP_KEEPING_EVIDENCE
    with django_assert_num_queries(0):
        assert control() is Command.STOP_KEEPING_EVIDENCE  # until the next look, the answer stands


def test_a_row_handed_to_another_attempt_is_abandoned_when_the_row_is_read(running, monkeypatch):
    monkeypatch.setattr(control_module, "CONTROL_POLL_S", 0.0)
    monkeypatch.setattr(control_module, "ROW_READ_EVERY_S", 0.0)
    control = controller_for(running, read_at=time.monotonic())
    Evaluation.objects.filter(pk=running.pk).update(attempts=2)
    assert control() is Command.STOP
    assert control.superseded


def test_a_safety_stop_that_fired_after_the_runners_last_call_is_taken_at_the_end(running, django_assert_num_queries):
    control = controller_for(running, monitor=RuleThatFired(), read_at=time.monotonic())
    with django_assert_num_queries(0):
        assert control.take_safety_stop() == Control.SAFETY_STOP
    assert control.requested == Control.SAFETY_STOP


def test_without_a_rule_that_fired_the_end_keeps_the_request_on_record(running):
    control = controller_for(running, read_at=time.monotonic())
    assert control.take_safety_stop() is None
