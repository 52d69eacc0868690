"""Tasks in compiled languages, scored end to end on the real engine: io tests for any enabled
language, check tests where the task gives them in its language (HumanEval-X style: the sample
defines the function, the check adds a main that asserts)."""

import pytest

from apps.tasks.tests.factories import check_task, io_task
from apps.tasks.tests.test_batch_pipeline import results, run_batch

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]

C_DOUBLER = '#include <stdio.h>\nint main(void) { int n; while (scanf("%d", &n) == 1) printf("%d\\n", 2 * n); }\n'
C_SQUARE_CHECK = "#include <assert.h>\nint main(void) { assert(square(3) == 9); assert(square(-2) == 4); return 0; }\n"


def test_a_c_task_with_io_tests_scores_a_right_a_wrong_and_a_broken_sample(alice, alice_api):
    io_task(alice, slug="demo/double-c", language="c")
    wrong = C_DOUBLER.replace("2 * n", "3 * n")
    broken = "int main(void) { return nope; }\n"
    samples = [{"code": C_DOUBLER}, {"code": wrong}, {"code": broken}]
    batch = run_batch(alice_api, {"task": "demo/double-c", "samples": samples, "k": [1]})
    assert (batch["status"], batch["total"], batch["passed"]) == ("completed", 3, 1)
    right, bad, uncompilable = results(alice_api, batch["id"])
    assert (right["passed"], [t["status"] for t in right["tests"]]) == (True, ["passed"] * 3)
    assert (bad["reason"], bad["passed"]) == ("tests_failed", False)
    assert uncompilable["passed"] is False
    assert {t["message"] for t in uncompilable["tests"]} == {"compile error: the program did not compile"}


def test_a_c_task_with_a_check_test_passes_a_correct_function_and_fails_a_wrong_one(alice, alice_api):
    tests = [{"name": "square", "category": "functional", "kind": "check", "code": C_SQUARE_CHECK}]
    check_task(alice, slug="demo/square-c", language="c", prompt="int square(int x)", tests=tests)
    samples = [{"code": "int square(int x) { return x * x; }\n"}, {"code": "int square(int x) { return x + x; }\n"}]
    batch = run_batch(alice_api, {"task": "demo/square-c", "samples": samples, "k": [1]})
    right, wrong = results(alice_api, batch["id"])
    assert (right["passed"], wrong["passed"]) == (True, False)
    assert batch["pass_at_k"] == {"1": 0.5}
