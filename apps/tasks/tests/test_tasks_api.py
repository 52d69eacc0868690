"""Tasks through the API: created, read with their tests hidden from others, versioned when edited
after use, imported from HumanEval and from JSONL; bad input gets a 400 and creates nothing."""

import json

import pytest
from django.core.management import CommandError, call_command

from apps.tasks.models import Task
from apps.tasks.tests.factories import SQUARE_CHECK, check_task, io_task

pytestmark = pytest.mark.django_db

URL = "/api/v1/tasks/"


def task_body(**fields):
    return {
        "slug": "alice/echo",
        "title": "Echo",
        "prompt": "Print what you read.",
        "tests": [{"name": "hi", "kind": "io", "stdin": "hi\n", "expected_stdout": "hi\n"}],
        **fields,
    }


def test_alice_creates_a_task_and_sees_its_hidden_tests(alice_api):
    response = alice_api.post(URL, task_body(), format="json")
    assert response.status_code == 201, response.content
    task = response.json()
    assert (task["slug"], task["version"], task["tests_visible"], task["public"]) == ("alice/echo", 1, True, False)
    assert task["tests"][0]["expected_stdout"] == "hi\n" and task["tests"][0]["match"] == "exact"


def test_bob_sees_a_public_tasks_test_names_but_never_its_code_or_expected_output(olivia, bob_api):
    check_task(olivia, public=True)
    io_task(olivia, public=True)
    for slug in ("demo/square", "demo/double"):
        task = bob_api.get(f"{URL}{slug}/").json()
        assert task["tests_visible"] is False and task["tests_count"] == len(task["tests"])
        text = json.dumps(task)
        assert "assert candidate" not in text and "expected_stdout" not in text and '"stdin"' not in text
    listing = json.dumps(bob_api.get(URL).json())
    assert "assert candidate" not in listing and "expected_stdout" not in listing


def test_a_private_task_of_alice_is_a_404_for_bob(alice, bob_api):
    check_task(alice)
    assert bob_api.get(f"{URL}demo/square/").status_code == 404
    assert bob_api.get(URL).json()["count"] == 0


def test_an_edit_of_an_unused_task_changes_it_and_an_edit_of_a_used_one_makes_a_version(alice, alice_api):
    task = check_task(alice)
    response = alice_api.patch(f"{URL}demo/square/", {"title": "Square it"}, format="json")
    assert (response.status_code, response.json()["version"], response.json()["title"]) == (200, 1, "Square it")
    batch = {"task": task.slug, "samples": [{"code": "def square(x): return x*x"}]}
    assert alice_api.post("/api/v1/batches/", batch, format="json").status_code == 201
    response = alice_api.patch(f"{URL}demo/square/", {"title": "Square, v2"}, format="json")
    assert (response.status_code, response.json()["version"]) == (200, 2)
    assert Task.objects.get(slug="demo/square", version=1).title == "Square it"  # as the batch used it
    assert alice_api.get(f"{URL}demo/square/?version=1").json()["title"] == "Square it"


def test_bob_cannot_edit_alices_public_task(olivia, bob_api):
    check_task(olivia, public=True)
    assert bob_api.patch(f"{URL}demo/square/", {"title": "mine"}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "../x"}, "slug"),
        ({"tests": []}, "tests"),
        ({"tests": [{"name": "x", "kind": "magic"}]}, "tests[0].kind"),
        ({"tests": [{"name": "x", "kind": "io", "expected_stdout": "1", "match": "fuzzy"}]}, "tests[0].match"),
        ({"tests": [{"name": "x", "kind": "check"}]}, "tests[0].code"),
        ({"tests": [{"name": "x", "kind": "io", "expected_stdout": "1", "category": "vibes"}]}, "tests[0].category"),
        ({"language": "cobol"}, "language"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"public": True}, "public"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_task_bodies_get_a_400_naming_the_field_and_create_nothing(alice_api, fields, field):
    response = alice_api.post(URL, task_body(**fields), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Task.objects.exists()


def test_a_taken_slug_is_a_400(alice, bob_api):
    check_task(alice)
    response = bob_api.post(URL, task_body(slug="demo/square"), format="json")
    assert response.status_code == 400 and "slug" in response.json()


def test_import_humaneval_loads_all_164_problems_as_public_tasks_and_again_changes_nothing(capsys):
    call_command("import_tasks", "humaneval")
    assert Task.objects.filter(source="humaneval", public=True, is_latest=True).count() == 164
    zero = Task.objects.get(slug="humaneval/0")
    assert zero.entry_point == "has_close_elements" and zero.tests[0]["kind"] == "check"
    assert zero.tests[0]["code"].rstrip().endswith("check(has_close_elements)")
    call_command("import_tasks", "humaneval")
    assert "0 created, 0 updated, 164 unchanged" in capsys.readouterr().out
    assert Task.objects.count() == 164


def test_a_jsonl_file_with_one_bad_line_names_it_and_imports_nothing(tmp_path):
    good = {"slug": "f/one", "title": "One", "tests": [{"name": "t", "kind": "check", "code": "pass"}]}
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "slug": "f/two", "tests": []}) + "\n")
    with pytest.raises(CommandError, match=r"tasks.jsonl:2: tests"):
        call_command("import_tasks", str(path))
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(CommandError, match=r"tasks.jsonl:2: not JSON"):
        call_command("import_tasks", str(path))
    assert not Task.objects.exists()
    path.write_text(json.dumps(good) + "\n")
    call_command("import_tasks", str(path))
    assert Task.objects.get(slug="f/one").public is False


def test_check_code_of_the_factory_is_what_the_owner_reads(alice, alice_api):
    check_task(alice)
    assert alice_api.get(f"{URL}demo/square/").json()["tests"][0]["code"] == SQUARE_CHECK
