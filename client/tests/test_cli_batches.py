"""`crucible batch …` and `crucible tasks …`: samples parsed locally, then against a real Daphne (tests/stack.py)."""

from __future__ import annotations

import json

import pytest
from crucible_client import cli

from apps.accounts.models import ApiToken
from apps.evaluations import models as evaluations  # TestResult, TestStatus: not pytest classes
from apps.evaluations.models import Evaluation, Reason, Runtime, Status
from apps.evaluations.runtimes import ensure_default_runtimes
from apps.evaluations.tests.factories import make_evaluation
from apps.tasks.models import Batch, BatchStatus, Task
from apps.tasks.tests.page_fixtures import HIDDEN_CHECK, HIDDEN_DETAIL, HIDDEN_EXPECTED, make_task
from tests.stack import live_stack  # noqa: F401 (the fixture)

live = pytest.mark.django_db(transaction=True)
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def runtimes(transactional_db):
    """Transactional tests flush the tables, data migrations included: put the runtimes back."""
    ensure_default_runtimes(Runtime)


@pytest.fixture
def crucible(live_stack, alice, runtimes):  # noqa: F811
    """Run the CLI in this process (as alice unless told otherwise); returns its exit status."""
    keys = {}

    def run(*argv, user=alice):
        if user.pk not in keys:
            keys[user.pk] = ApiToken.issue(user, "cli")[1]
        return cli.main(["--url", live_stack.url, "--token", keys[user.pk], *argv])

    return run


def write_lines(path, *lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def ended_batch(owner, task: Task, verdicts: list[bool]) -> Batch:
    """A batch whose samples have all ended (built directly: nothing is queued for the live worker)."""
    batch = Batch.objects.create(owner=owner, task=task, k=[1, 5], total=len(verdicts), status=BatchStatus.COMPLETED)
    for index, passed in enumerate(verdicts):
        sample = make_evaluation(
            owner,
            status=Status.SUCCEEDED if passed else Status.FAILED,
            reason=Reason.EXIT if passed else Reason.TESTS_FAILED,
            exit_code=0,
            batch_id=batch.pk,
            task=task.slug,
            task_version=task.version,
            tests=task.tests,
            tests_hidden=not task.may_see_tests(owner),
            passed=passed,
            metadata={"sample": index},
        )
        evaluations.TestResult.objects.create(
            evaluation=sample,
            position=0,
            name="adds-small",
            category="functional",
            status=evaluations.TestStatus.PASSED if passed else evaluations.TestStatus.FAILED,
            passed=passed,
            duration_ms=4,
            message="" if passed else "line 1 differs",
            detail="" if passed else HIDDEN_DETAIL,
        )
    return batch


# --- without a server -----------------------------------------------------------------------------


def test_every_malformed_sample_line_is_reported_with_its_number_and_nothing_is_sent(tmp_path, capsys):
    samples = write_lines(
        tmp_path / "samples.jsonl",
        {"code": "print(1)"},
        "{not json",
        "",
        {"code": "print(1)", "tsk": "x"},
        42,
        {"code": ""},
        "print(2)",  # a bare string is not JSON either: it must be quoted
        json.dumps("print(3)"),
    )
    assert cli.main(["--url", NOWHERE, "--token", "t", "batch", "submit", samples, "--task", "t/1"]) == 2
    err = capsys.readouterr().err
    assert "nothing was submitted" in err and "cannot reach" not in err
    assert "line 2: not JSON" in err
    assert "line 4: unknown field 'tsk'" in err
    assert "line 5: expected" in err
    assert 'line 6: "code" must be a non-empty string' in err
    assert "line 7: not JSON" in err
    assert "line 1:" not in err and "line 8:" not in err


def test_a_sample_without_a_task_needs_task(tmp_path, capsys):
    samples = write_lines(tmp_path / "samples.jsonl", {"code": "print(1)", "task": "t/1"}, {"code": "print(2)"})
    assert cli.main(["--url", NOWHERE, "--token", "t", "batch", "submit", samples]) == 2
    assert "line 2: no task: give --task SLUG" in capsys.readouterr().err


def test_an_empty_file_is_refused(tmp_path, capsys):
    samples = write_lines(tmp_path / "samples.jsonl", "", "  ")
    assert cli.main(["--url", NOWHERE, "--token", "t", "batch", "submit", samples, "--task", "t/1"]) == 2
    assert "the file has no samples" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "1,x", "-1", ","])
def test_a_k_below_one_or_not_a_number_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--url", NOWHERE, "--token", "t", "batch", "submit", "f", "--k", bad])
    assert exit_.value.code == 2 and "--k" in capsys.readouterr().err


def test_the_progress_line_is_a_bar_with_counts():
    line = cli.progress_line({"total": 10, "ended": 5, "passed": 3, "status": "running"})
    assert line == "[" + "#" * 15 + "." * 15 + "] 5/10 ended · 3 passed · running"


# --- against the live stack -----------------------------------------------------------------------


@live
def test_tasks_import_creates_each_good_line_and_names_each_bad_one(crucible, alice, tmp_path, capsys):
    tests = [{"name": "t", "kind": "io", "expected_stdout": "4\n"}]
    path = write_lines(
        tmp_path / "tasks.jsonl",
        {"slug": "alice/one", "title": "One", "tests": tests},
        "[1, 2",
        {"slug": "Bad Slug", "title": "Bad", "tests": tests},
        ["not", "an", "object"],
        {"slug": "alice/two", "title": "Two", "tests": tests},
        {"slug": "alice/one", "title": "One again", "tests": tests},
    )
    assert crucible("tasks", "import", path) == 1
    captured = capsys.readouterr()
    assert captured.out == "alice/one v1\nalice/two v1\n"
    assert "line 2: not JSON" in captured.err
    assert "line 3: HTTP 400: slug: Must be lowercase" in captured.err
    assert "line 4: expected a JSON object" in captured.err
    assert "line 6: HTTP 400: slug: A task with this slug exists" in captured.err
    assert "imported 2 tasks, 4 failed" in captured.err
    assert sorted(Task.objects.values_list("slug", flat=True)) == ["alice/one", "alice/two"]


@live
def test_tasks_list_filters_and_show_hides_another_owners_tests(crucible, alice, olivia, capsys):
    make_task(olivia, "humaneval/0", public=True, source="humaneval", title="Close elements")
    make_task(olivia, "mbpp/1", public=True, source="mbpp", title="First and last")
    assert crucible("tasks", "list", "--source", "humaneval") == 0
    out = capsys.readouterr().out
    assert "humaneval/0" in out and "mbpp/1" not in out
    assert crucible("tasks", "list", "-q", "first and last") == 0
    out = capsys.readouterr().out
    assert "mbpp/1" in out and "humaneval/0" not in out
    assert crucible("tasks", "show", "humaneval/0") == 0
    out = capsys.readouterr().out
    assert "adds-small [functional, io]" in out and "hidden: names only" in out
    assert HIDDEN_EXPECTED not in out and "the-hidden-check-9" not in out
    assert crucible("tasks", "show", "humaneval/0", user=olivia) == 0
    assert HIDDEN_EXPECTED in capsys.readouterr().out
    assert crucible("tasks", "show", "no/such") == 2
    assert "HTTP 404" in capsys.readouterr().err


@live
def test_batch_results_as_a_table_and_as_jsonl_without_hidden_detail(crucible, alice, olivia, capsys):
    batch = ended_batch(alice, make_task(olivia, "humaneval/0", public=True), [True, False])
    assert crucible("batch", "results", str(batch.pk)) == 0
    out = capsys.readouterr().out
    assert "status:    completed" in out and "pass@1:    0.5000" in out
    assert "pass@5:    not computable (fewer than 5 judged samples for humaneval/0)" in out
    assert "adds-small (failed)" in out
    assert crucible("batch", "results", str(batch.pk), "--jsonl") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["sample"], line["passed"]) for line in lines] == [(0, True), (1, False)]
    assert lines[1]["tests"][0]["message"] == "line 1 differs" and "detail" not in lines[1]["tests"][0]
    assert HIDDEN_DETAIL not in json.dumps(lines) and HIDDEN_CHECK not in json.dumps(lines)


@live
def test_another_researchers_batch_is_not_found(crucible, alice, bob, capsys):
    batch = ended_batch(alice, make_task(alice), [True])
    for argv in (["results", str(batch.pk)], ["results", str(batch.pk), "--jsonl"], ["cancel", str(batch.pk)]):
        assert crucible("batch", *argv, user=bob) == 2
        assert "HTTP 404" in capsys.readouterr().err
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.COMPLETED


@live
def test_following_an_ended_batch_prints_its_summary(crucible, live_stack, alice, capsys):  # noqa: F811
    batch = ended_batch(alice, make_task(alice), [True, True, False])
    client = cli.Client(live_stack.url, ApiToken.issue(alice, "cli")[1])
    assert cli.follow_batch(client, str(batch.pk)) == 0
    captured = capsys.readouterr()
    assert "[" + "#" * 30 + "] 3/3 ended · 2 passed · completed" in captured.err
    assert "samples:   3 (3 ended, 2 passed)" in captured.out and "pass@1:    0.6667" in captured.out


@live
@pytest.mark.docker
def test_batch_submit_then_cancel_leaves_the_batch_cancelled(crucible, alice, tmp_path, capsys):
    task = make_task(alice)
    samples = write_lines(tmp_path / "samples.jsonl", json.dumps("import time\ntime.sleep(60)\n"), {"code": "print(4)"})
    assert crucible("batch", "submit", samples, "--task", task.slug, "--k", "1") == 0
    batch = Batch.objects.get(pk=capsys.readouterr().out.strip())
    assert batch.total == 2 and batch.k == [1] and batch.owner == alice
    assert crucible("batch", "cancel", str(batch.pk)) == 0
    assert f"{batch.pk}: cancelled" in capsys.readouterr().out
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.CANCELLED


@live
@pytest.mark.docker
def test_batch_submit_follow_scores_completions_in_the_sandbox(crucible, alice, tmp_path, capsys):
    task_body = {
        "slug": "alice/double",
        "title": "Double",
        "prompt": "def double(x):\n",
        "entry_point": "double",
        "timeout_s": 20,
        "tests": [{"name": "doubles-two", "kind": "check", "code": "assert double(2) == 4"}],
    }
    tasks = write_lines(tmp_path / "tasks.jsonl", task_body)
    assert crucible("tasks", "import", tasks) == 0
    samples = write_lines(tmp_path / "samples.jsonl", json.dumps("    return 2 * x\n"), {"code": "    return x + 1\n"})
    assert crucible("batch", "submit", samples, "--task", "alice/double", "--completions", "--follow") == 0
    captured = capsys.readouterr()
    assert "2/2 ended · 1 passed · completed" in captured.err
    assert "status:    completed" in captured.out and "pass@1:    0.5000" in captured.out
    assert sorted(Evaluation.objects.values_list("passed", flat=True)) == [False, True]
