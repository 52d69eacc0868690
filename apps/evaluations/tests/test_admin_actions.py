"""The operator's admin actions on evaluations (cancel, emergency stop, run again), through the real
changelist POST as the admin page sends it."""

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Quota
from apps.evaluations.models import Control, Evaluation, Status
from apps.evaluations.tests.factories import make_evaluation

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:evaluations_evaluation_changelist")


@pytest.fixture
def olivia_admin(olivia) -> Client:
    client = Client()
    client.force_login(olivia)
    return client


def act(client: Client, action: str, *evaluations):
    body = {"action": action, "_selected_action": [str(e.pk) for e in evaluations], "index": 0}
    return client.post(CHANGELIST, body, follow=True)


def audited(action: str, actor) -> set[str]:
    """Targets of the audit log's ``action`` entries by ``actor`` (read from its table, whichever app owns it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select target from monitoring_auditevent where action = %s and actor_id = %s", [action, actor.pk]
        )
        return {target for (target,) in cursor.fetchall()}


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_olivia_cancels_a_queued_evaluation_and_requests_the_cancel_of_a_running_one(olivia_admin, alice, olivia):
    queued = make_evaluation(alice)
    running = make_evaluation(alice, status=Status.RUNNING)
    response = act(olivia_admin, "cancel_selected", queued, running)
    assert response.status_code == 200
    assert "Cancel requested for 2 evaluation(s)." in messages_of(response)
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == Status.CANCELLED
    assert (running.status, running.control) == (Status.RUNNING, Control.CANCEL)  # the worker ends it
    assert audited("evaluation.cancel", olivia) == {str(queued.pk), str(running.pk)}


def test_olivia_stops_a_running_evaluation_at_once(olivia_admin, alice, olivia):
    running = make_evaluation(alice, status=Status.RUNNING)
    response = act(olivia_admin, "stop_selected", running)
    assert "Stop requested for 1 evaluation(s)." in messages_of(response)
    running.refresh_from_db()
    assert running.control == Control.STOP
    assert audited("evaluation.stop", olivia) == {str(running.pk)}


def test_olivia_runs_alices_evaluation_again_as_herself_with_the_same_code_and_limits(olivia_admin, alice, olivia):
    original = make_evaluation(alice, status=Status.FAILED, code="print('again')", memory_mb=64, timeout_s=7)
    response = act(olivia_admin, "run_again", original)
    assert "Submitted 1 evaluation(s) again." in messages_of(response)
    again = Evaluation.objects.exclude(pk=original.pk).get()
    assert (again.owner, again.status, again.code) == (olivia, Status.QUEUED, "print('again')")
    assert (again.memory_mb, again.timeout_s) == (64, 7)
    assert again.metadata["rerun_of"] == str(original.pk)
    assert original.status == Evaluation.objects.get(pk=original.pk).status  # the original is untouched


def test_a_researcher_cannot_use_the_admin_actions(alice):
    running = make_evaluation(alice, status=Status.RUNNING)
    client = Client()
    client.force_login(alice)
    response = client.post(CHANGELIST, {"action": "stop_selected", "_selected_action": [str(running.pk)]})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    running.refresh_from_db()
    assert running.control in ("", None)


def test_a_refused_run_again_shows_the_services_message(olivia_admin, alice, olivia):
    Quota.objects.create(user=olivia, max_active=0)
    original = make_evaluation(alice, status=Status.FAILED)
    response = act(olivia_admin, "run_again", original)
    assert f"{original.pk}: Quota exceeded: at most 0 evaluations may be queued or running at once" in " ".join(
        messages_of(response)
    )
    assert Evaluation.objects.count() == 1
