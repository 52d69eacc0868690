"""The incidents' pages and API without the engine: who sees what, and what an operator can do there."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.evaluations.models import Status
from apps.evaluations.tests.factories import make_evaluation
from apps.monitoring import incidents
from apps.monitoring.models import Incident, IncidentStatus
from apps.sessions.models import Status as SessionStatus
from apps.sessions.models import Step, StepKind
from apps.sessions.tests.factories import make_session

pytestmark = pytest.mark.django_db


def incident_on_alices_run(alice) -> Incident:
    evaluation = make_evaluation(alice, status=Status.STOPPED)
    return incidents.open_for_emergency_stop(evaluation_id=evaluation.pk, owner_id=alice.pk, actor="olivia")


def test_olivia_reads_the_report_page_of_a_sessions_incident(alice, olivia, client):
    session = make_session(alice, status=SessionStatus.ENDED)
    incident = incidents.open_for_emergency_stop(session_id=session.pk, owner_id=alice.pk, actor=olivia)
    incidents.record_evidence(
        session_id=session.pk,
        evidence={"frozen": True, "freeze_ms": 12.0, "total_ms": 300.0, "collected": True, "processes": []},
        artifacts=[{"name": "notes.txt", "size": 5, "sha256": "ab" * 32}],
    )
    client.force_login(olivia)
    html = client.get(f"/monitoring/incidents/{incident.pk}/").content.decode()
    assert "emergency stop by olivia" in html and "container_frozen" in html and "ab" * 32 in html
    assert f"/monitoring/incidents/{incident.pk}/" in client.get("/monitoring/incidents/").content.decode()


def test_a_sessions_report_holds_what_ran_in_it_and_its_output(alice, olivia, olivia_api):
    session = make_session(alice, status=SessionStatus.ENDED)
    Step.objects.create(
        session=session, seq=1, kind=StepKind.EXEC, cmd=["python3", "probe.py"], stdout="probing\n", returncode=0
    )
    incident = incidents.open_for_emergency_stop(session_id=session.pk, owner_id=alice.pk, actor=olivia)
    report = olivia_api.get(f"/api/v1/incidents/{incident.pk}/report/").json()
    assert report["run"]["kind"] == "session" and report["run"]["runtime"] == session.sandbox_runtime
    assert "#1 exec: python3 probe.py (exit 0)" in report["run"]["code"]
    assert "probing" in report["output_excerpt"]
    markdown = olivia_api.get(f"/api/v1/incidents/{incident.pk}/report/?as=md").content.decode()
    assert "python3 probe.py" in markdown and "probing" in markdown


def test_alice_lists_only_the_incidents_of_her_runs_and_bob_sees_none_of_them(alice, bob, alice_api, bob_api):
    incident = incident_on_alices_run(alice)
    assert [row["id"] for row in alice_api.get("/api/v1/incidents/").json()["results"]] == [incident.pk]
    assert bob_api.get("/api/v1/incidents/").json()["results"] == []
    assert alice_api.get("/api/v1/incidents/?status=closed").status_code == 400


def test_the_pages_are_for_operators_only(alice, client):
    incident = incident_on_alices_run(alice)
    client.force_login(alice)
    assert client.get(f"/monitoring/incidents/{incident.pk}/").status_code == 404  # hidden from non-operators
    assert client.post(f"/monitoring/incidents/{incident.pk}/release/").status_code == 404
    incident.refresh_from_db()
    assert incident.released_at is None


def test_olivia_resolves_an_incident_from_its_page_with_a_comment_and_it_is_audited(alice, olivia, client):
    incident = incident_on_alices_run(alice)
    client.force_login(olivia)
    response = client.post(
        f"/monitoring/incidents/{incident.pk}/status/", {"status": "false_positive", "comment": "a test run"}
    )
    assert response.status_code == 302
    incident.refresh_from_db()
    assert (incident.status, incident.status_comment, incident.status_changed_by) == (
        IncidentStatus.FALSE_POSITIVE,
        "a test run",
        olivia,
    )
    assert not incident.quarantined
    assert AuditEvent.objects.filter(action="incident.transition", actor_name="olivia").exists()
    assert client.post(f"/monitoring/incidents/{incident.pk}/status/", {"status": "nonsense"}).status_code == 400


def test_a_new_stop_on_a_run_whose_incident_was_resolved_opens_it_again(alice, olivia):
    incident = incident_on_alices_run(alice)
    incidents.transition(incident, IncidentStatus.RESOLVED, actor=olivia)
    again = incidents.open_for_emergency_stop(evaluation_id=incident.evaluation_id, owner_id=alice.pk, actor=olivia)
    assert again.pk == incident.pk and again.status == IncidentStatus.OPEN and again.quarantined
