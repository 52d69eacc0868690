"""Safety rules on real runs (PostgreSQL, Redis, the Docker engine): alerts raised, stop rules stop."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.evaluations.models import Status
from apps.evaluations.tests.helpers import run_and_wait
from apps.monitoring.models import Alert, ResourceSample

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

MEMORY_CLIMBER = (
    "import time\n"
    "blocks = []\n"
    "for _ in range(12):\n"
    "    blocks.append(b'x' * (4 << 20))\n"
    "    time.sleep(0.1)\n"
    "print('holding', len(blocks) * 4, 'MiB', flush=True)\n"
    "time.sleep(3)\n"
)


@pytest.fixture(autouse=True)
def _queues(empty_queues):
    pass


def test_a_fork_bomb_raises_the_pids_alert_and_the_default_rule_stops_it(alice_api, default_rules):
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"
    evaluation = run_and_wait(alice_api, code=code, timeout_s=8)
    alert = Alert.objects.get(evaluation_id=evaluation.pk, rule_name="fork-bomb")
    assert alert.kind == "pids_near_limit" and alert.severity == "critical"
    assert "pids" in alert.evidence
    assert evaluation.status == Status.SAFETY_STOPPED
    assert AuditEvent.objects.filter(action="evaluation.stop", target=str(evaluation.pk)).exists()


def test_a_memory_climber_raises_the_memory_alert(alice_api, only_rules):
    only_rules(name="memory", kind="memory_near_limit", threshold=0.5)
    evaluation = run_and_wait(alice_api, code=MEMORY_CLIMBER, memory_mb=64, timeout_s=15)
    assert evaluation.status == Status.SUCCEEDED  # action "alert": it runs on
    alert = Alert.objects.get(evaluation_id=evaluation.pk)
    assert (alert.rule_name, alert.action) == ("memory", "alert")
    assert "of 64 MiB" in alert.evidence
    samples = ResourceSample.objects.filter(evaluation_id=evaluation.pk)
    assert samples.count() >= 2
    assert max(s.memory_bytes for s in samples) >= 32 * 1024 * 1024


def test_a_memory_rule_with_action_stop_ends_the_run_safety_stopped(alice_api, only_rules):
    only_rules(name="memory", kind="memory_near_limit", threshold=0.5, action="stop", severity="critical")
    evaluation = run_and_wait(alice_api, code=MEMORY_CLIMBER + "print('never reached')\n", memory_mb=64, timeout_s=15)
    assert evaluation.status == Status.SAFETY_STOPPED
    assert Alert.objects.filter(evaluation_id=evaluation.pk, rule_name="memory", action="stop").exists()
    output = b"".join(bytes(c.data) for c in evaluation.chunks.order_by("seq"))
    assert b"never reached" not in output


def test_an_output_flood_raises_its_alert(alice_api, only_rules):
    only_rules(name="flood", kind="output_flood", threshold=20_000, duration_s=2)
    code = (
        "import sys, time\n"
        "for _ in range(400):\n"
        "    sys.stdout.write('y' * 999 + '\\n'); sys.stdout.flush(); time.sleep(0.01)\n"
    )
    evaluation = run_and_wait(alice_api, code=code, timeout_s=20)
    alert = Alert.objects.get(evaluation_id=evaluation.pk)
    assert alert.rule_name == "flood"
    assert "bytes/s" in alert.evidence
    assert evaluation.status == Status.SUCCEEDED


def test_a_quiet_program_raises_nothing(alice_api, default_rules):
    evaluation = run_and_wait(alice_api, code="import time\nprint('hi')\ntime.sleep(1.5)\n")
    assert evaluation.status == Status.SUCCEEDED
    assert not Alert.objects.filter(evaluation_id=evaluation.pk).exists()


def test_output_matching_an_operator_pattern_raises_with_the_evidence(alice_api, only_rules):
    only_rules(name="creds", kind="output_pattern", pattern=r"/etc/shadow|docker\.sock", severity="critical")
    code = "print('about to read /etc/shadow <b>bold</b>', flush=True)\n"
    evaluation = run_and_wait(alice_api, code=code)
    alert = Alert.objects.get(evaluation_id=evaluation.pk)
    assert alert.rule_name == "creds"
    assert "/etc/shadow <b>bold</b>" in alert.evidence
    assert evaluation.status == Status.SUCCEEDED


def test_the_metadata_pattern_rule_stops_a_program_that_keeps_going(alice_api, default_rules):
    code = "import time\nprint('GET http://169.254.169.254/latest/meta-data/', flush=True)\ntime.sleep(20)\n"
    evaluation = run_and_wait(alice_api, code=code, timeout_s=25)
    assert evaluation.status == Status.SAFETY_STOPPED
    assert evaluation.duration_ms < 15000
    assert Alert.objects.filter(evaluation_id=evaluation.pk, rule_name="cloud-metadata").exists()
