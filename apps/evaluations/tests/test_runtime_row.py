"""A sample run next in the same job takes its runtime's row from the sample before it, while fresh."""

from __future__ import annotations

import time

import pytest

from apps.evaluations.models import Runtime
from apps.evaluations.running import RUNTIME_ROW_FRESH_S, EvaluationRun, RuntimeRead
from apps.evaluations.tests.factories import make_evaluation

pytestmark = pytest.mark.django_db


def next_in_the_job(evaluation, read: RuntimeRead | None) -> EvaluationRun:
    run = EvaluationRun(str(evaluation.pk), runtime=read)
    run.evaluation = evaluation
    return run


def test_alices_next_sample_takes_the_row_the_sample_before_it_read_a_moment_ago(alice, django_assert_num_queries):
    python = Runtime.objects.get(name="python")
    run = next_in_the_job(make_evaluation(alice), RuntimeRead(python, time.monotonic()))
    with django_assert_num_queries(0):
        assert run.runtime_row() is python
        assert run.runtime_row() is python
    assert run.runtime_read.row is python


def test_a_row_read_longer_ago_is_read_again_with_what_an_operator_changed_meanwhile(alice, django_assert_num_queries):
    python = Runtime.objects.get(name="python")
    Runtime.objects.filter(pk=python.pk).update(compile_timeout_s=12.5)
    run = next_in_the_job(make_evaluation(alice), RuntimeRead(python, time.monotonic() - RUNTIME_ROW_FRESH_S - 0.1))
    with django_assert_num_queries(1):
        assert run.runtime_row().compile_timeout_s == 12.5
    assert run.runtime_read.at > time.monotonic() - 1  # the next sample takes this read


def test_a_sample_of_another_language_reads_its_own_runtime(alice, django_assert_num_queries):
    python = Runtime.objects.get(name="python")
    run = next_in_the_job(make_evaluation(alice, language="bash"), RuntimeRead(python, time.monotonic()))
    with django_assert_num_queries(1):
        assert run.runtime_row().name == "bash"


def test_the_first_run_of_a_job_reads_its_runtime_once(alice, django_assert_num_queries):
    run = next_in_the_job(make_evaluation(alice), None)
    with django_assert_num_queries(1):
        assert run.runtime_row().name == "python"
        assert run.runtime_row().name == "python"
