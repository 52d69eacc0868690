"""Tasks in compiled languages, scored end to end on the real engine: io tests for any enabled
language, check tests where the task gives them in its language (HumanEval-X style: the sample
defines the function, the check adds a main that asserts)."""

import pytest

from apps.evaluations.models import Evaluation
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


# One task in several languages, HumanEval-X / MultiPL-E style: the prompt and each check test in
# every language the task provides; a sample (or a whole batch) names the language it is written in.
ADD_CHECKS = {
    "python": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n",
    "javascript": (
        'const assert = require("assert");\nassert.strictEqual(add(2, 3), 5);\nassert.strictEqual(add(-1, 1), 0);\n'
    ),
    "c": "#include <assert.h>\nint main(void) { assert(add(2, 3) == 5); assert(add(-1, 1) == 0); return 0; }\n",
}
ADD_SAMPLES = {  # right, wrong, and one that does not compile (C) or fails to parse (Python, JavaScript)
    "python": [
        "def add(a, b):\n    return a + b\n",
        "def add(a, b):\n    return a - b\n",
        "def add(a, b):\n    return a +\n",
    ],
    "javascript": [
        "function add(a, b) { return a + b; }\n",
        "function add(a, b) { return a - b; }\n",
        "function add(a, b) { return a + ; }\n",
    ],
    "c": [
        "int add(int a, int b) { return a + b; }\n",
        "int add(int a, int b) { return a - b; }\n",
        "int add(int a, int b) { return a + ; }\n",
    ],
}


def add_task(owner):
    tests = [
        {
            "name": "add",
            "kind": "check",
            "code": ADD_CHECKS["python"],
            "code_by_language": {"javascript": ADD_CHECKS["javascript"], "c": ADD_CHECKS["c"]},
        }
    ]
    prompts = {"javascript": "function add(a, b) {\n", "c": "int add(int a, int b) {\n"}
    return check_task(owner, slug="demo/add", prompt="def add(a, b):\n", prompts=prompts, tests=tests)


def test_one_task_scores_right_wrong_and_broken_samples_in_python_javascript_and_c(alice, alice_api):
    add_task(alice)
    samples = [{"code": code, "language": lang} for lang, codes in ADD_SAMPLES.items() for code in codes]
    batch = run_batch(alice_api, {"task": "demo/add", "samples": samples, "k": [1]})
    assert (batch["status"], batch["total"], batch["passed"]) == ("completed", 9, 3)
    scored = results(alice_api, batch["id"])
    by_language = {lang: scored[3 * i : 3 * i + 3] for i, lang in enumerate(ADD_SAMPLES)}
    for lang, (right, wrong, broken) in by_language.items():
        assert (right["status"], right["passed"]) == ("succeeded", True), lang
        assert (wrong["status"], wrong["reason"], wrong["passed"]) == ("failed", "tests_failed", False), lang
        assert (broken["status"], broken["passed"]) == ("failed", False), lang
    assert by_language["python"][1]["tests"][0]["message"] == "exit code 1 (AssertionError)"
    assert by_language["python"][2]["tests"][0]["message"] == "exit code 1 (SyntaxError)"
    assert by_language["javascript"][1]["tests"][0]["message"] == "exit code 1"
    assert by_language["javascript"][2]["tests"][0]["message"] == "exit code 1"
    assert by_language["c"][1]["tests"][0]["status"] == "failed"  # assert() aborts the program
    assert by_language["c"][2]["tests"][0]["message"] == "compile error: the program did not compile"
    languages = [Evaluation.objects.get(pk=s["evaluation"]).language for s in scored]
    assert languages == ["python"] * 3 + ["javascript"] * 3 + ["c"] * 3


def test_completions_in_another_language_get_that_languages_prompt(alice, alice_api):
    add_task(alice)
    samples = [{"code": "  return a + b;\n}\n"}, {"code": "  return a * b;\n}\n"}]
    batch = run_batch(
        alice_api, {"task": "demo/add", "language": "javascript", "samples_are": "completions", "samples": samples}
    )
    right, wrong = results(alice_api, batch["id"])
    assert (right["passed"], wrong["passed"]) == (True, False)
    assert Evaluation.objects.get(pk=right["evaluation"]).code == "function add(a, b) {\n  return a + b;\n}\n"


def test_io_tests_run_in_any_enabled_language_the_batch_names(alice, alice_api):
    io_task(alice, slug="demo/double-any")  # written for Python; io tests need no code of their own
    doubler = 'require("fs").readFileSync(0, "utf8").split(/\\s+/).filter(Boolean).forEach(n => console.log(2 * n));\n'
    batch = run_batch(alice_api, {"task": "demo/double-any", "language": "javascript", "samples": [{"code": doubler}]})
    [sample] = results(alice_api, batch["id"])
    assert (sample["passed"], [t["status"] for t in sample["tests"]]) == (True, ["passed"] * 3)


def test_a_batch_in_a_language_a_check_test_is_not_given_in_is_refused_whole(alice, alice_api):
    add_task(alice)
    response = alice_api.post(
        "/api/v1/batches/", {"task": "demo/add", "language": "bash", "samples": [{"code": "x"}]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["language"] == [
        "Task demo/add: Its check test 'add' has no code in bash (only in c, javascript, python)."
    ]
    response = alice_api.post(
        "/api/v1/batches/", {"task": "demo/add", "samples": [{"code": "x", "language": "cobol"}]}, format="json"
    )
    assert response.status_code == 400 and "Unknown language 'cobol'" in response.json()["samples[0].language"][0]
    assert not Evaluation.objects.exists()
