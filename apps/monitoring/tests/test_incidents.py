"""Safety incidents on real runs (PostgreSQL, Redis, the Docker engine): a stop opens one with its
evidence, the run's artifacts are quarantined until an operator releases them, the report renders."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.evaluations.models import Evaluation, Status
from apps.evaluations.tests.helpers import Background, run_and_wait, submit, wait_for, wait_for_status
from apps.monitoring.models import EventKind, Incident, IncidentStatus, ResourceSample

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

WRITE_THEN = (
    "import os\n"
    "open(os.path.join(os.environ['CRUCIBLE_OUTPUT_DIR'], 'notes.txt'), 'w').write('written first')\n"
    "print('wrote notes', flush=True)\n"
)
MEMORY_CLIMBER = (
    WRITE_THEN
    + "import time\nblocks = []\nfor _ in range(40):\n    blocks.append(b'x' * (4 << 20))\n    time.sleep(0.1)\n"
)
# Its notes are the sandbox user's alone (0600): a collector that ran as anyone else would miss them.
FORK_BOMB = (
    "import os, time\n"
    "fd = os.open(os.path.join(os.environ['CRUCIBLE_OUTPUT_DIR'], 'notes.txt'), os.O_WRONLY | os.O_CREAT, 0o600)\n"
    "os.write(fd, b'written first')\n"
    "os.close(fd)\n"
    "time.sleep(1.5)\n"
    "while True:\n"
    "    try: os.fork()\n"
    "    except OSError: pass\n"
)


@pytest.fixture(autouse=True)
def _queues(empty_queues):
    pass


def kinds(incident: Incident) -> list[str]:
    return list(incident.events.values_list("kind", flat=True))


def test_a_memory_climber_stopped_by_a_rule_opens_an_incident_with_its_artifacts_and_samples(
    alice, alice_api, only_rules
):
    only_rules(name="memory", kind="memory_near_limit", threshold=0.5, action="stop", severity="critical")
    evaluation = run_and_wait(alice_api, code=MEMORY_CLIMBER, memory_mb=64, timeout_s=20)
    assert evaluation.status == Status.SAFETY_STOPPED
    incident = Incident.objects.get(evaluation_id=evaluation.pk)
    assert (incident.status, incident.severity, incident.owner) == (IncidentStatus.OPEN, "critical", alice)
    assert incident.alerts.get().rule_name == "memory"
    assert [a["name"] for a in incident.evidence["artifacts"]] == ["notes.txt"]
    assert incident.evidence["frozen"] is True and incident.evidence["collected"] is True
    assert bytes(evaluation.artifacts.get().data) == b"written first"
    assert ResourceSample.objects.filter(evaluation_id=evaluation.pk, at__lte=evaluation.finished_at).exists()
    for kind in (EventKind.ALERT, EventKind.STOP_REQUESTED, EventKind.CONTAINER_KILLED, EventKind.EVIDENCE_COLLECTED):
        assert kind in kinds(incident)
    assert alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/").json()["incident"] == incident.pk


def test_a_fork_bomb_stopped_by_the_default_rule_opens_an_incident_with_samples(alice_api, default_rules):
    # Room in memory for the bomb's 64 processes: under gVisor the sandbox shares one memory limit, and
    # a bomb that outgrows it before the stop takes the whole sandbox down, its files with it (README).
    evaluation = run_and_wait(alice_api, code=FORK_BOMB, timeout_s=10, memory_mb=512)
    assert evaluation.status == Status.SAFETY_STOPPED
    incident = Incident.objects.get(evaluation_id=evaluation.pk)
    assert incident.alerts.filter(rule_name="fork-bomb").exists()
    assert EventKind.CONTAINER_KILLED in kinds(incident)
    assert incident.evidence["collected"] is True, incident.evidence  # under gVisor as under runc
    assert [a["name"] for a in incident.evidence["artifacts"]] == ["notes.txt"]
    assert bytes(evaluation.artifacts.get().data) == b"written first"
    assert EventKind.EVIDENCE_COLLECTED in kinds(incident)
    assert ResourceSample.objects.filter(evaluation_id=evaluation.pk).exists()


def test_the_owner_gets_403_on_a_quarantined_artifact_until_an_operator_releases_it(alice_api, olivia_api, only_rules):
    only_rules(name="memory", kind="memory_near_limit", threshold=0.5, action="stop", severity="critical")
    evaluation = run_and_wait(alice_api, code=MEMORY_CLIMBER, memory_mb=64, timeout_s=20)
    url = f"/api/v1/evaluations/{evaluation.pk}/artifacts/notes.txt"
    refused = alice_api.get(url)
    assert refused.status_code == 403
    assert "quarantined" in refused.json()["detail"]
    assert olivia_api.get(url).status_code == 403  # operators too, unless they say they mean it
    assert olivia_api.get(url + "?quarantine=release-ack").content == b"written first"
    assert AuditEvent.objects.filter(action="incident.quarantined_download", actor_name="olivia").exists()
    incident = Incident.objects.get(evaluation_id=evaluation.pk)
    assert alice_api.post(f"/api/v1/incidents/{incident.pk}/release/").status_code == 403
    assert olivia_api.post(f"/api/v1/incidents/{incident.pk}/release/").status_code == 200
    assert alice_api.get(url).content == b"written first"


def test_an_emergency_stop_keeps_the_files_written_before_it(alice_api):
    code = WRITE_THEN + "import time\ntime.sleep(60)\n"
    evaluation_id = submit(alice_api, code=code, timeout_s=60).json()["id"]
    with Background(evaluation_id):
        wait_for(lambda: Evaluation.objects.get(pk=evaluation_id).chunks.exists())
        assert alice_api.post(f"/api/v1/evaluations/{evaluation_id}/stop/").status_code == 202
        evaluation = wait_for_status(evaluation_id, Status.STOPPED, timeout=30)
    assert bytes(evaluation.artifacts.get().data) == b"written first"
    incident = Incident.objects.get(evaluation_id=evaluation_id)
    assert incident.actor == "alice"
    assert [a["name"] for a in incident.evidence["artifacts"]] == ["notes.txt"]


def test_the_owner_sees_status_and_timeline_but_not_the_reviewers_comment(
    alice, alice_api, bob_api, olivia_api, client, only_rules
):
    only_rules(name="memory", kind="memory_near_limit", threshold=0.5, action="stop", severity="critical")
    evaluation = run_and_wait(alice_api, code=MEMORY_CLIMBER, memory_mb=64, timeout_s=20)
    incident = Incident.objects.get(evaluation_id=evaluation.pk)
    changed = olivia_api.patch(
        f"/api/v1/incidents/{incident.pk}/", {"status": "acknowledged", "comment": "looks deliberate"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["status"] == "acknowledged"
    seen = alice_api.get(f"/api/v1/incidents/{incident.pk}/").json()
    assert seen["status"] == "acknowledged"
    assert "status_comment" not in seen
    assert "looks deliberate" not in str(seen)
    assert any(event["kind"] == "container_killed" for event in seen["timeline"])
    client.force_login(alice)  # her run's page says so too, with the quarantine, and no more
    page = client.get(reverse("evaluations:detail", args=[evaluation.pk])).content.decode()
    assert f"Safety incident #{incident.pk} (critical): acknowledged." in page
    assert "quarantined" in page and "looks deliberate" not in page and "/monitoring/incidents/" not in page
    assert (
        alice_api.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "resolved"}, format="json").status_code == 403
    )
    assert bob_api.get(f"/api/v1/incidents/{incident.pk}/").status_code == 404
    bad = olivia_api.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "forgotten"}, format="json")
    assert bad.status_code == 400


def test_the_report_renders_with_the_timeline_and_downloads_as_json_and_markdown(
    alice_api, olivia, olivia_api, client, only_rules
):
    only_rules(name="memory", kind="memory_near_limit", threshold=0.5, action="stop", severity="critical")
    evaluation = run_and_wait(alice_api, code=MEMORY_CLIMBER, memory_mb=64, timeout_s=20)
    incident = Incident.objects.get(evaluation_id=evaluation.pk)
    client.force_login(olivia)
    page = client.get(f"/monitoring/incidents/{incident.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Timeline" in html and "container_killed" in html and evaluation.code_sha256 in html
    report = olivia_api.get(f"/api/v1/incidents/{incident.pk}/report/").json()
    assert [e["kind"] for e in report["timeline"]][:2] == ["opened", "alert"]
    assert report["run"]["code_sha256"] == evaluation.code_sha256
    assert report["samples"] and report["artifacts"][0]["name"] == "notes.txt"
    around = report["output_around"]
    assert [a["rule"] for a in around] == ["memory"] and "wrote notes" in around[0]["before"]
    assert "Output around rule memory" in html
    graphs = f'data-samples-api="/api/v1/evaluations/{evaluation.pk}/samples/"'  # what the graphs draw from
    assert graphs in html and olivia_api.get(f"/api/v1/evaluations/{evaluation.pk}/samples/").json()["samples"]
    markdown = olivia_api.get(f"/api/v1/incidents/{incident.pk}/report/?as=md").content.decode()
    assert "## Timeline" in markdown and "notes.txt" in markdown and "## Output around rule memory" in markdown
    assert alice_api.get(f"/api/v1/incidents/{incident.pk}/report/").status_code == 403
