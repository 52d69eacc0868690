"""The kill switch: one action stops every running evaluation and pauses the queues; release resumes."""

from __future__ import annotations

import django_rq
import pytest
from rq.suspension import is_suspended

from apps.audit.models import AuditEvent
from apps.evaluations import killswitch
from apps.evaluations.models import Evaluation, Status
from apps.evaluations.tests.helpers import Background, submit, wait_for_status, work_off_queues
from apps.monitoring.models import Alert, Incident

URL = "/api/v1/killswitch/"


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_engaging_stops_every_running_evaluation_and_pauses_the_queue_until_released(
    alice_api, bob_api, olivia_api, empty_queues
):
    ids = [
        submit(api, code="import time; time.sleep(60)", timeout_s=60).json()["id"]
        for api in (alice_api, alice_api, bob_api)
    ]
    backgrounds = [Background(evaluation_id) for evaluation_id in ids]
    for background in backgrounds:
        background.__enter__()
    try:
        for evaluation_id in ids:
            wait_for_status(evaluation_id, Status.RUNNING, timeout=60)

        response = olivia_api.post(URL, {"engaged": True}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["engaged"] is True
        assert sorted(response.json()["stopped"]) == sorted(ids)
        for evaluation_id in ids:
            wait_for_status(evaluation_id, Status.STOPPED, timeout=30)
    finally:
        for background in backgrounds:
            background.__exit__(None, None, None)

    assert is_suspended(django_rq.get_connection("default"))
    assert Alert.objects.filter(rule_name="emergency_stop", evaluation_id__in=ids).count() == 3
    # Each stopped run has its incident, opened by the operator through the kill switch.
    incidents = Incident.objects.filter(evaluation_id__in=ids)
    assert incidents.count() == 3
    assert {incident.summary for incident in incidents} == {"kill switch by olivia"}
    event = AuditEvent.objects.get(action="killswitch.engage")
    assert event.actor_name == "olivia" and sorted(event.details["stopped"]) == sorted(ids)

    # Queued work stays queued: no worker takes it while the switch is engaged.
    waiting = submit(alice_api, code="print('after the storm')").json()["id"]
    work_off_queues()
    assert Evaluation.objects.get(pk=waiting).status == Status.QUEUED
    assert olivia_api.get(URL).json() == {"engaged": True, "running": 0, "queued": 1}

    response = olivia_api.post(URL, {"engaged": False}, format="json")
    assert response.status_code == 200 and response.json()["engaged"] is False
    work_off_queues()
    assert Evaluation.objects.get(pk=waiting).status == Status.SUCCEEDED
    assert AuditEvent.objects.filter(action="killswitch.release", actor_name="olivia").exists()


@pytest.mark.django_db
def test_a_job_taken_just_as_the_switch_engaged_leaves_its_row_queued(alice_api, olivia):
    from apps.evaluations import running

    evaluation_id = submit(alice_api, code="print(1)").json()["id"]
    killswitch.engage(olivia)
    assert running.run(evaluation_id) == running.RunDisposition.DEFERRED_KILL_SWITCH
    assert Evaluation.objects.get(pk=evaluation_id).status == Status.QUEUED


@pytest.mark.django_db
def test_only_operators_may_see_or_use_the_kill_switch(alice_api, anonymous_api):
    assert alice_api.get(URL).status_code == 404
    assert alice_api.post(URL, {"engaged": True}, format="json").status_code == 404
    assert anonymous_api.get(URL).status_code in (401, 403)
    assert anonymous_api.post(URL, {"engaged": True}, format="json").status_code in (401, 403)
    assert not killswitch.is_engaged()


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{}, {"engaged": "maybe"}, {"engaged": None}, [1, 2]])
def test_a_malformed_request_is_a_400(olivia_api, body):
    response = olivia_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert not killswitch.is_engaged()


@pytest.mark.django_db
def test_the_dashboard_form_needs_confirmation(client, olivia):
    client.force_login(olivia)
    page = client.get("/monitoring/killswitch/")
    assert page.status_code == 200 and b"Engage the kill switch" in page.content
    client.post("/monitoring/killswitch/", {"engaged": "true"})
    assert not killswitch.is_engaged()
    response = client.post("/monitoring/killswitch/", {"engaged": "true", "confirm": "yes"})
    assert response.status_code == 302 and killswitch.is_engaged()
    assert b"Kill switch ENGAGED" in client.get("/monitoring/").content
    client.post("/monitoring/killswitch/", {"engaged": "false", "confirm": "yes"})
    assert not killswitch.is_engaged()
    assert client.post("/monitoring/killswitch/", {"engaged": "sideways", "confirm": "yes"}).status_code == 400
