"""RQ jobs of monitoring: alert delivery. Each raises on failure so RQ retries it (bounded, see alerts.notify)."""

from __future__ import annotations

import json
import logging

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from apps.monitoring.models import Alert

log = logging.getLogger(__name__)


def _alert(alert_id: int) -> Alert | None:
    return Alert.objects.filter(pk=alert_id).first()


def incident_link(alert: Alert) -> dict | None:
    """The incident the alert belongs to and its report's page (the operators' console; an absolute
    link with ``SITE_URL``), if any."""
    incident = alert.incidents.order_by("pk").first()
    if incident is None:
        return None
    report = f"{settings.SITE_URL}{reverse('console:incident', args=[incident.pk])}"
    return {"id": incident.pk, "status": incident.status, "report": report}


def send_alert_webhook(alert_id: int) -> str:
    alert = _alert(alert_id)
    url = settings.ALERT_WEBHOOK_URL
    if alert is None or not url:
        return "nothing to send"
    body = {
        "source": "crucible",
        "instance": settings.CRUCIBLE_INSTANCE,
        "alert": alert.as_message(),
        "incident": incident_link(alert),
    }
    response = requests.post(
        url,
        data=json.dumps(body),
        headers={"Content-Type": "application/json", "User-Agent": "crucible-alerts"},
        timeout=settings.ALERT_WEBHOOK_TIMEOUT_S,
        allow_redirects=False,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"webhook answered {response.status_code}")
    return f"sent ({response.status_code})"


def send_alert_email(alert_id: int) -> str:
    alert = _alert(alert_id)
    if alert is None or not settings.ALERT_EMAILS:
        return "nothing to send"
    subject = f"[Crucible] {alert.severity.upper()} {alert.rule_name}: {alert.message}"[:200]
    incident = incident_link(alert)
    lines = [
        f"Incident:   #{incident['id']} ({incident['status']}), report at {incident['report']}"
        if incident
        else "Incident:   none",
        f"Rule:       {alert.rule_name} ({alert.kind or 'n/a'})",
        f"Severity:   {alert.severity}",
        f"Action:     {alert.action}",
        f"Evaluation: {alert.evaluation_id or 'n/a'}",
        f"Time:       {alert.created_at.isoformat()}",
        "",
        alert.message,
        "",
        "Evidence (program output, verbatim text):",
        alert.evidence,
    ]
    send_mail(subject.replace("\n", " "), "\n".join(lines), None, list(settings.ALERT_EMAILS), fail_silently=False)
    return "sent"
