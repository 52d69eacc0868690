"""Tasks and batches built through the services, and samples ended by hand, for the page, admin and CLI tests."""

from __future__ import annotations

from django.utils import timezone

from apps.evaluations.models import Evaluation, Reason, Status, TestResult, TestStatus
from apps.tasks import services
from apps.tasks.models import Batch, Task

HIDDEN_EXPECTED = "the-hidden-expected-output-7"
HIDDEN_STDIN = "the-hidden-stdin-5"
HIDDEN_CHECK = "assert add(2, 2) == 4  # the-hidden-check-9"
HIDDEN_DETAIL = "expected line 1: the-hidden-detail-3"


def make_task(owner, slug="alice/add", *, public=False, source="", title="Add two numbers", prompt=None) -> Task:
    """A python task with one io test and one check test, through ``services.create_task``."""
    body = {
        "slug": slug,
        "title": title,
        "prompt": "def add(a, b):\n    " if prompt is None else prompt,
        "entry_point": "add",
        "source": source,
        "public": public,
        "tests": [
            {"name": "adds-small", "category": "functional", "kind": "io", "stdin": HIDDEN_STDIN,
             "expected_stdout": HIDDEN_EXPECTED, "match": "strip"},
            {"name": "check-add", "category": "performance", "kind": "check", "code": HIDDEN_CHECK},
        ],
    }  # fmt: skip
    return services.create_task(owner, body)


def submit(owner, task: Task, codes: list[str], *, k=(1,)) -> Batch:
    return services.submit_batch(owner, {"task": task.slug, "samples": [{"code": c} for c in codes], "k": list(k)})


def end_sample(evaluation: Evaluation, *, passed: bool, message: str = "line 1 differs") -> Evaluation:
    """The sample ended as its tests said: every test passed, or the io test failed with ``message``."""
    now = timezone.now()
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Status.SUCCEEDED if passed else Status.FAILED,
        reason=Reason.EXIT if passed else Reason.TESTS_FAILED,
        passed=passed,
        held=False,
        started_at=now,
        finished_at=now,
        duration_ms=12,
        exit_code=0,
    )
    for position, (name, category) in enumerate([("adds-small", "functional"), ("check-add", "performance")]):
        ok = passed or position == 1
        TestResult.objects.create(
            evaluation=evaluation,
            position=position,
            name=name,
            category=category,
            status=TestStatus.PASSED if ok else TestStatus.FAILED,
            passed=ok,
            duration_ms=5,
            message="" if ok else message,
            detail="" if ok else HIDDEN_DETAIL,
        )
    evaluation.refresh_from_db()
    return evaluation


def samples_of(batch: Batch) -> list[Evaluation]:
    return list(Evaluation.objects.filter(batch_id=batch.pk).order_by("created_at"))
