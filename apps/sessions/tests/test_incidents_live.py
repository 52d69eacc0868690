"""Safety incidents of sessions, with a real session host and real sandboxes: a stop keeps the
workspace's files on the incident, and the session's files are quarantined from its owner."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.monitoring.models import Incident, SafetyRule
from apps.sessions.models import Session
from apps.sessions.tests.test_sessions_live import Api
from tests.stack import live_sessions_stack, wait_until  # noqa: F401 (the fixture)

live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_sessions(live_sessions_stack, alice):  # noqa: F811
    return Api(live_sessions_stack.url, alice)


@pytest.fixture
def olivia_sessions(live_sessions_stack, olivia):  # noqa: F811
    return Api(live_sessions_stack.url, olivia)


def evidence_recorded(session_id) -> Incident:
    return wait_until(
        lambda: (i := Incident.objects.filter(session_id=session_id).first()) and "frozen" in i.evidence and i,
        90,  # the evidence step is bounded, but a loaded engine answers slowly
        what="the session's evidence on its incident",
    )


@live
def test_an_emergency_stop_keeps_the_files_alice_wrote_and_quarantines_them(alice_sessions, olivia_sessions):
    created = alice_sessions.create().json()
    assert alice_sessions.put(created["id"], "notes.txt", b"written before the stop").status_code == 200
    stopped = olivia_sessions.http.post(f"{olivia_sessions.base}{created['id']}/stop/", timeout=30)
    assert stopped.status_code == 202
    incident = evidence_recorded(created["id"])
    assert incident.owner.username == "alice" and incident.actor == "olivia"
    assert "notes.txt" in [a["name"] for a in incident.evidence["artifacts"]], incident.evidence
    assert bytes(incident.files.get(name="notes.txt").data) == b"written before the stop"
    detail = alice_sessions.http.get(f"{alice_sessions.base}{created['id']}/", timeout=30).json()
    assert detail["incident"] == incident.pk
    refused = alice_sessions.get(created["id"], "notes.txt")
    assert refused.status_code == 403 and "quarantined" in refused.json()["detail"]
    kept = olivia_sessions.http.get(
        f"{olivia_sessions.base.replace('sandboxes/', '')}incidents/{incident.pk}/files/",
        params={"name": "notes.txt"},
        timeout=30,
    )
    assert kept.content == b"written before the stop"
    assert AuditEvent.objects.filter(action="incident.quarantined_download", actor_name="olivia").exists()


@live
def test_a_stop_rule_on_a_session_opens_an_incident_with_its_samples(alice_sessions):
    SafetyRule.objects.update_or_create(
        name="cloud-metadata",
        defaults={"kind": "output_pattern", "pattern": r"169\.254\.169\.254", "severity": "critical", "action": "stop"},
    )
    created = alice_sessions.create().json()
    alice_sessions.exec(created["id"], ["echo", "curl http://169.254.169.254/latest"])
    incident = evidence_recorded(created["id"])
    assert Session.objects.get(pk=created["id"]).end_reason == "safety_stopped"
    assert incident.alerts.get().rule_name == "cloud-metadata"
    assert "stop_requested" in list(incident.events.values_list("kind", flat=True))


@live
def test_a_process_name_rule_stops_a_session_running_a_forbidden_tool(alice_sessions):
    SafetyRule.objects.update_or_create(
        name="miner",
        defaults={"kind": "process_name", "pattern": r"^xmrig$", "severity": "critical", "action": "stop"},
    )
    created = alice_sessions.create().json()
    started = alice_sessions.exec(
        created["id"], ["bash", "-c", "cp /bin/sleep /sandbox/xmrig && /sandbox/xmrig 60"], timeout_s=30
    )
    assert started.status_code in (200, 409), started.text  # the stop may end the session under the exec
    incident = evidence_recorded(created["id"])
    assert Session.objects.get(pk=created["id"]).end_reason == "safety_stopped"
    assert incident.alerts.get().rule_name == "miner"
    if incident.evidence["frozen"]:  # a loaded engine may not pause within the bound: then it kills at once
        assert "xmrig" in [process["name"] for process in incident.evidence["processes"]], incident.evidence
    else:
        assert "did not pause" in incident.evidence["detail"]
