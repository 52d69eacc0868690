"""Alerts leave the building: a webhook (a local HTTP server here) and email, from RQ jobs with bounded retries."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import django_rq
import pytest
from django.core import mail

from apps.evaluations.tests.helpers import run_and_wait, work_off_queues
from apps.monitoring.alerts import raise_alert
from apps.monitoring.models import Alert, Incident


class Receiver:
    """A local webhook endpoint in a thread; answers ``status`` and keeps every JSON body it got."""

    def __init__(self, status: int = 204):
        received = self.received = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_webhook_receives_an_alert_raised_during_a_run(alice_api, only_rules, settings, empty_queues):
    only_rules(name="creds", kind="output_pattern", pattern=r"/etc/shadow", severity="critical")
    with Receiver() as receiver:
        settings.ALERT_WEBHOOK_URL = receiver.url
        evaluation = run_and_wait(alice_api, code="print('cat /etc/shadow')")
        work_off_queues()
    assert len(receiver.received) == 1
    body = receiver.received[0]
    assert body["source"] == "crucible"
    assert body["alert"]["rule"] == "creds"
    assert body["alert"]["evaluation_id"] == str(evaluation.pk)
    assert "/etc/shadow" in body["alert"]["evidence"]


@pytest.mark.django_db(transaction=True)
def test_a_failing_webhook_is_retried_a_bounded_number_of_times(settings, empty_queues):
    settings.ALERT_NOTIFY_RETRIES = 2
    settings.ALERT_NOTIFY_RETRY_INTERVALS = [0]
    failed = django_rq.get_queue(next(iter(settings.RQ_QUEUES))).failed_job_registry
    failed_before = failed.count
    with Receiver(status=500) as receiver:
        settings.ALERT_WEBHOOK_URL = receiver.url
        raise_alert(evaluation_id=uuid.uuid4(), rule_name="x", severity="warning", message="m")
        work_off_queues()
    assert len(receiver.received) == 3  # the first try and two retries, then it gives up
    assert failed.count == failed_before + 1


@pytest.mark.django_db(transaction=True)
def test_alerts_are_emailed_to_the_configured_addresses(settings, empty_queues):
    settings.ALERT_EMAILS = ["ops@example.com", "oncall@example.com"]
    evaluation_id = uuid.uuid4()
    raise_alert(
        evaluation_id=evaluation_id, rule_name="fork-bomb", severity="critical", message="64 processes", evidence="pids"
    )
    work_off_queues()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "oncall@example.com"]
    assert "CRITICAL fork-bomb" in message.subject
    assert str(evaluation_id) in message.body


@pytest.mark.django_db(transaction=True)
def test_nothing_is_queued_when_no_channel_is_configured(settings, empty_queues):
    settings.ALERT_WEBHOOK_URL = ""
    settings.ALERT_EMAILS = []
    raise_alert(evaluation_id=uuid.uuid4(), rule_name="x", severity="info", message="m")
    assert django_rq.get_queue(next(iter(settings.RQ_QUEUES))).count == 0


@pytest.mark.django_db
def test_a_rule_raises_once_per_evaluation():
    evaluation_id = uuid.uuid4()
    first = raise_alert(evaluation_id=evaluation_id, rule_name="x", severity="info", message="m")
    again = raise_alert(evaluation_id=evaluation_id, rule_name="x", severity="info", message="m")
    assert first is not None and again is None
    assert Alert.objects.filter(evaluation_id=evaluation_id).count() == 1


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_webhook_and_the_email_of_a_stop_rule_link_its_incidents_report(
    alice_api, only_rules, settings, empty_queues
):
    only_rules(
        name="metadata", kind="output_pattern", pattern=r"169\.254\.169\.254", severity="critical", action="stop"
    )
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.SITE_URL = "https://crucible.example.org"
    with Receiver() as receiver:
        settings.ALERT_WEBHOOK_URL = receiver.url
        evaluation = run_and_wait(alice_api, code="import time\nprint('169.254.169.254', flush=True)\ntime.sleep(30)")
        work_off_queues()
    incident = Incident.objects.get(evaluation_id=evaluation.pk)
    link = receiver.received[0]["incident"]
    report = f"https://crucible.example.org/monitoring/incidents/{incident.pk}/"
    assert link == {"id": incident.pk, "status": "open", "report": report}
    assert f"report at {report}" in mail.outbox[0].body
