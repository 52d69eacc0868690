"""The monitoring admin: safety rules edited (and audited, bad patterns refused); alerts and samples list fast."""

from __future__ import annotations

import uuid

import pytest

from apps.audit.models import AuditEvent
from apps.monitoring.alerts import raise_alert
from apps.monitoring.models import SafetyRule

pytestmark = pytest.mark.django_db


def test_a_change_to_a_safety_rule_is_audited(admin_client):
    rule = SafetyRule.objects.create(name="memory", kind="memory_near_limit", threshold=0.9)
    response = admin_client.post(
        f"/admin/monitoring/safetyrule/{rule.pk}/change/",
        {
            "name": "memory",
            "description": "",
            "kind": "memory_near_limit",
            "enabled": "on",
            "threshold": "0.8",
            "duration_s": "0",
            "pattern": "",
            "severity": "critical",
            "action": "stop",
        },
    )
    assert response.status_code == 302, response.content
    rule.refresh_from_db()
    assert (rule.threshold, rule.action) == (0.8, "stop")
    event = AuditEvent.objects.get(action="admin.change")
    assert event.actor_name == "admin"
    assert event.target == f"monitoring.safetyrule:{rule.pk}"


def test_the_admin_refuses_an_invalid_pattern(admin_client):
    response = admin_client.post(
        "/admin/monitoring/safetyrule/add/",
        {
            "name": "bad",
            "kind": "output_pattern",
            "enabled": "on",
            "threshold": "0",
            "duration_s": "0",
            "pattern": "(unclosed",
            "severity": "warning",
            "action": "alert",
        },
    )
    assert response.status_code == 200
    assert "Not a valid regular expression" in response.content.decode()
    assert not SafetyRule.objects.filter(name="bad").exists()


@pytest.mark.parametrize(
    "path", ["/admin/monitoring/alert/", "/admin/monitoring/resourcesample/", "/admin/monitoring/safetyrule/"]
)
def test_admin_lists_load(admin_client, path):
    raise_alert(evaluation_id=uuid.uuid4(), rule_name="x", severity="info", message="m")
    assert admin_client.get(path).status_code == 200
