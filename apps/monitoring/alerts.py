"""Raise, deliver and acknowledge alerts.

Delivery (webhook ``ALERT_WEBHOOK_URL``, email ``ALERT_EMAILS``) happens in RQ jobs with bounded
retries, never on the worker's run loop. While the kill switch is engaged RQ workers take no jobs
at all (the suspension is global), so alerts are then delivered from a short-lived thread instead:
an emergency is exactly when operators need them.
"""

from __future__ import annotations

import logging
import threading
import time

import django_rq
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rq import Retry
from rq.suspension import is_suspended

from apps.audit import services as audit
from apps.monitoring.models import Alert, RuleAction, Severity

log = logging.getLogger(__name__)

# The channel-layer group every operator's alert feed (``WS /ws/alerts/``) listens on; the
# publishers of evaluations and sessions send each alert there.
OPERATORS_ALERTS_GROUP = "operators.alerts"


def notify_queue() -> str:
    """Alerts are delivered from the most urgent queue (``RQ_QUEUES`` lists them by priority)."""
    return next(iter(settings.RQ_QUEUES))


def raise_alert(
    *,
    evaluation_id=None,
    session_id=None,
    rule_name: str,
    severity: str,
    message: str,
    evidence: str = "",
    kind: str = "",
    action: str = RuleAction.ALERT,
    rule=None,
) -> Alert | None:
    """Record an alert and send it on; returns None when this rule already fired for this evaluation
    (or agent session: ``session_id``)."""
    alert, created = Alert.objects.get_or_create(
        evaluation_id=evaluation_id,
        session_id=session_id,
        rule_name=rule_name,
        defaults={
            "rule": rule,
            "kind": kind,
            "severity": severity,
            "action": action,
            "message": message[:300],
            "evidence": evidence[:2000],
        },
    )
    if not created:
        return None
    log.warning("alert %s (%s) on %s: %s", rule_name, severity, evaluation_id or session_id, message)
    transaction.on_commit(lambda: notify(alert.pk))
    return alert


def raise_emergency_stop_alert(evaluation_id=None, *, session_id=None, actor=None) -> Alert | None:
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else "the system"
    return raise_alert(
        evaluation_id=evaluation_id,
        session_id=session_id,
        rule_name="emergency_stop",
        kind="emergency_stop",
        severity=Severity.CRITICAL,
        action=RuleAction.STOP,
        message=f"emergency stop by {who}",
        evidence=f"stop requested by {who}",
    )


def channels() -> list[str]:
    """The delivery jobs configured: dotted paths of the job functions."""
    jobs = []
    if settings.ALERT_WEBHOOK_URL:
        jobs.append("apps.monitoring.jobs.send_alert_webhook")
    if settings.ALERT_EMAILS:
        jobs.append("apps.monitoring.jobs.send_alert_email")
    return jobs


def notify(alert_id: int) -> None:
    """Queue the delivery jobs. Never raises: an alert is recorded even if it cannot be sent now."""
    jobs = channels()
    if not jobs:
        return
    try:
        queue = django_rq.get_queue(notify_queue())
        if is_suspended(queue.connection):
            threading.Thread(target=_deliver_in_thread, args=(jobs, alert_id), daemon=True).start()
            return
        retry = Retry(max=settings.ALERT_NOTIFY_RETRIES, interval=settings.ALERT_NOTIFY_RETRY_INTERVALS)
        for job in jobs:
            queue.enqueue(job, alert_id, retry=retry, job_timeout=60, result_ttl=3600, failure_ttl=7 * 24 * 3600)
    except Exception:
        log.exception("could not queue the delivery of alert %s", alert_id)


def _deliver_in_thread(jobs: list[str], alert_id: int) -> None:
    try:
        for job in jobs:
            for attempt in range(settings.ALERT_NOTIFY_RETRIES + 1):
                try:
                    import_string(job)(alert_id)
                    break
                except Exception:
                    log.warning("alert %s: %s attempt %d failed", alert_id, job, attempt + 1, exc_info=True)
                    time.sleep(min(2**attempt, 10))
    finally:
        connection.close()


def acknowledge(alert: Alert, *, actor, request=None) -> bool:
    """Mark an alert seen by an operator (once); audited."""
    changed = (
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=timezone.now(), acknowledged_by=actor
        )
        == 1
    )
    alert.refresh_from_db()
    if changed:
        audit.record(
            "alert.acknowledge",
            actor=actor,
            target=f"alert:{alert.pk}",
            request=request,
            rule=alert.rule_name,
            evaluation=str(alert.evaluation_id or ""),
            severity=alert.severity,
        )
    return changed


MAX_BULK_ACKNOWLEDGE = 500  # one form's worth; more is a crafted request


def acknowledge_many(alert_ids, *, actor, request=None) -> int:
    """Acknowledge each of ``alert_ids`` not acknowledged yet (each audited, as one by one); returns how
    many this call acknowledged. Unknown ids are skipped."""
    count = 0
    for alert in Alert.objects.filter(pk__in=list(alert_ids)[:MAX_BULK_ACKNOWLEDGE], acknowledged_at__isnull=True):
        count += acknowledge(alert, actor=actor, request=request)
    return count
