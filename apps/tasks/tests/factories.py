"""Tasks for tests: a HumanEval-style ``check`` task and an ``io`` task, owned by whoever is given."""

from __future__ import annotations

from apps.tasks import services

SQUARE_CHECK = "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(-2) == 4\n\ncheck(square)\n"


def check_task(owner, slug="demo/square", **fields):
    body = {
        "slug": slug,
        "title": "Square a number",
        "prompt": "def square(x):\n",
        "entry_point": "square",
        "tests": [{"name": "square", "category": "functional", "kind": "check", "code": SQUARE_CHECK}],
        **fields,
    }
    return services.create_task(owner, body)


def io_task(owner, slug="demo/double", **fields):
    body = {
        "slug": slug,
        "title": "Double each number",
        "prompt": "Read numbers, one per line; print each doubled.",
        "tests": [
            {"name": "one", "kind": "io", "stdin": "1\n", "expected_stdout": "2\n", "match": "exact"},
            {"name": "spaces", "kind": "io", "stdin": "5\n6\n", "expected_stdout": "  10\n12  \n\n", "match": "strip"},
            {"name": "tokens", "kind": "io", "stdin": "7\n8\n", "expected_stdout": "14 16", "match": "tokens"},
        ],
        **fields,
    }
    return services.create_task(owner, body)
