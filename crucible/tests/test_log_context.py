"""Log lines about an evaluation carry its id, and LOG_FORMAT=json writes one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from apps.evaluations.tests.helpers import run_and_wait
from crucible.jsonlog import JsonFormatter
from crucible.logcontext import ContextFilter, bound


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.LogRecord("apps.x", logging.WARNING, __file__, 1, message, (), None)
    ContextFilter().filter(made)
    return made


def test_a_json_line_has_time_level_logger_message_and_the_bound_ids():
    with bound(evaluation_id="e-1", worker="w"):
        line = json.loads(
            JsonFormatter().format(
                record(
                    "disk %s",
                )
            )
        )
    assert {key: line[key] for key in ("level", "logger", "message", "evaluation_id", "worker")} == {
        "level": "WARNING",
        "logger": "apps.x",
        "message": "disk %s",
        "evaluation_id": "e-1",
        "worker": "w",
    }
    assert line["ts"].endswith("+00:00")


def test_outside_a_bound_block_no_id_is_added_and_a_traceback_is_kept_as_text():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        made = logging.LogRecord("apps.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    ContextFilter().filter(made)
    line = json.loads(JsonFormatter().format(made))
    assert "evaluation_id" not in line and "ValueError: boom" in line["exc"]


def test_the_plain_format_names_the_bound_ids_at_the_end_of_the_line(settings):
    formatter = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])
    with bound(session_id="s-9"):
        assert formatter.format(record("ready")).endswith("ready [session_id=s-9]")


@pytest.mark.django_db(transaction=True)
def test_every_line_logged_while_alice_evaluation_runs_carries_its_id(alice_api, caplog):
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO)
    evaluation = run_and_wait(alice_api, code="print('hi')")
    during = [r for r in caplog.records if r.name.startswith("apps.")]
    assert during, "the run logged nothing"
    assert {getattr(r, "evaluation_id", None) for r in during} == {str(evaluation.pk)}
