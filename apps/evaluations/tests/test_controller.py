"""What the runner's control calls ask of the database: a request made on the row is seen within
``CONTROL_POLL_S``, and a run claimed a moment ago does not ask again before then."""

from __future__ import annotations

import time

import pytest

from apps.evaluations import controller as control_module
from apps.evaluations.controller import CONTROL_POLL_S, Controller
from apps.evaluations.models import Control, Status
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.tests.factories import make_evaluation
from apps.sandboxing.outcomes import Command

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(alice):
    return make_evaluation(alice, status=Status.RUNNING, attempts=1)


def controller_for(evaluation, **kwargs) -> Controller:
    return Controller(evaluation, OutputRecorder(evaluation.pk), **kwargs)


def test_a_run_claimed_a_moment_ago_asks_the_row_only_when_its_turn_comes(running, django_assert_num_queries):
    control = controller_for(running, read_at=time.monotonic())
    with django_assert_num_queries(0):
        assert control() is None  # the claim wrote the row a moment ago: nothing to ask yet
    running.request_control(Control.CANCEL)
    time.sleep(CONTROL_POLL_S)
    with django_assert_num_queries(1):
        assert control() is Command.CANCEL


def test_without_a_known_moment_the_first_call_asks_the_row(running, django_assert_num_queries):
    running.request_control(Control.STOP)
    control = controller_for(running)
    with django_assert_num_queries(1):
        assert control() is Command.STOP_KEEPING_EVIDENCE
    with django_assert_num_queries(0):
        assert control() is Command.STOP_KEEPING_EVIDENCE  # until the next turn, the answer stands


def test_a_row_handed_to_another_attempt_is_abandoned_at_the_next_turn(running, monkeypatch):
    monkeypatch.setattr(control_module, "CONTROL_POLL_S", 0.0)
    control = controller_for(running, read_at=time.monotonic())
    running.__class__.objects.filter(pk=running.pk).update(attempts=2)
    assert control() is Command.STOP
    assert control.superseded
