"""The tasks admin: tasks created and edited through the services (validated, versioned); batches read-only."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from apps.accounts.roles import OPERATORS_GROUP, ensure_groups
from apps.evaluations.models import Status
from apps.tasks.models import Batch, BatchStatus, Task
from apps.tasks.tests.page_fixtures import make_task, samples_of, submit

pytestmark = pytest.mark.django_db

TESTS = [{"name": "prints-4", "category": "functional", "kind": "io", "stdin": "", "expected_stdout": "4\n"}]


def form(**changes) -> dict:
    values = {
        "slug": "ops/four",
        "title": "Print four",
        "prompt": "Print 4.",
        "language": "python",
        "entry_point": "",
        "timeout_s": "5",
        "memory_mb": "128",
        "tests": json.dumps(TESTS),
        "public": "on",
        "source": "ops",
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


@pytest.fixture
def operator_client(olivia):
    """olivia, staff but not a superuser: what the Operators group lets her do."""
    ensure_groups()
    client = Client()
    client.force_login(olivia)
    return client


def test_an_operator_creates_a_public_task_in_the_admin(operator_client, olivia):
    response = operator_client.post("/admin/tasks/task/add/", form())
    assert response.status_code == 302, response.content.decode()[:2000]
    task = Task.objects.get(slug="ops/four")
    assert (task.owner, task.public, task.version, task.tests[0]["match"]) == (olivia, True, 1, "exact")


def test_the_admin_refuses_a_bad_test_with_the_apis_message(operator_client):
    bad = [{"name": "x", "kind": "io"}]
    response = operator_client.post("/admin/tasks/task/add/", form(tests=json.dumps(bad)))
    assert response.status_code == 200
    assert "tests[0].expected_stdout: This field is required." in response.content.decode()
    assert not Task.objects.filter(slug="ops/four").exists()


def test_the_admin_refuses_a_slug_that_exists(operator_client, alice):
    make_task(alice, "ops/four")
    response = operator_client.post("/admin/tasks/task/add/", form())
    assert response.status_code == 200 and "A task with this slug exists" in response.content.decode()
    assert Task.objects.filter(slug="ops/four").count() == 1


def test_an_admin_edit_of_a_used_task_makes_a_new_version(operator_client, alice):
    task = make_task(alice, "alice/add")
    submit(alice, task, ["print(4)"])
    response = operator_client.post(
        f"/admin/tasks/task/{task.pk}/change/", form(slug=None, title="Print four, edited", public=None)
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    versions = Task.objects.filter(slug="alice/add").order_by("version")
    assert [(v.version, v.is_latest, v.title) for v in versions] == [
        (1, False, "Add two numbers"),
        (2, True, "Print four, edited"),
    ]


def test_an_earlier_version_is_read_only_in_the_admin(operator_client, alice):
    task = make_task(alice, "alice/add")
    submit(alice, task, ["print(4)"])
    from apps.tasks import services

    services.edit_task(task, alice, {"title": "v2"})
    html = operator_client.get(f"/admin/tasks/task/{task.pk}/change/").content.decode()
    assert 'name="title"' not in html


def test_the_task_list_shows_versions_and_owners_and_searches(operator_client, alice, olivia):
    make_task(alice, "alice/add")
    make_task(olivia, "humaneval/0", public=True, source="humaneval")
    html = operator_client.get("/admin/tasks/task/", {"q": "humaneval"}).content.decode()
    assert "humaneval/0" in html and "alice/add" not in html


def test_batches_are_read_only_and_the_action_cancels_them(operator_client, alice):
    batch = submit(alice, make_task(alice), ["print(4)", "print(5)"])
    assert operator_client.get("/admin/tasks/batch/add/").status_code == 403
    html = operator_client.get("/admin/tasks/batch/").content.decode()
    assert str(batch.pk) in html and "alice" in html
    change = operator_client.get(f"/admin/tasks/batch/{batch.pk}/change/").content.decode()
    assert 'name="total"' not in change
    response = operator_client.post(
        "/admin/tasks/batch/", {"action": "cancel_selected", "_selected_action": [str(batch.pk)]}
    )
    assert response.status_code == 302
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.CANCELLED
    assert {s.status for s in samples_of(batch)} == {Status.CANCELLED}


def test_a_researcher_cannot_open_the_tasks_admin(alice):
    client = Client()
    client.force_login(alice)
    assert client.get("/admin/tasks/task/").status_code == 302  # to the admin's sign-in


def test_operators_get_the_tasks_permissions(olivia):
    ensure_groups()
    olivia = type(olivia).objects.get(pk=olivia.pk)
    assert olivia.groups.filter(name=OPERATORS_GROUP).exists()
    assert olivia.has_perms(["tasks.view_task", "tasks.add_task", "tasks.change_task", "tasks.view_batch"])
    assert not olivia.has_perm("tasks.delete_task")
