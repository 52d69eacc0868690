"""Operator pages: dashboard, alerts (acknowledge), kill switch, audit log, header badge."""

from __future__ import annotations

import re
import uuid

import django_rq
import pytest
from django.utils import timezone
from rq import Worker

from apps.audit.models import AuditEvent
from apps.audit.services import record
from apps.evaluations.models import Evaluation, Status
from apps.evaluations.tests.helpers import submit
from apps.evaluations.worker import warm_profiles
from apps.monitoring.alerts import raise_alert
from apps.monitoring.models import Alert, ResourceSample
from apps.sandboxing import pool

pytestmark = pytest.mark.django_db

# Any <script> tag without a src: inline script, which the strict CSP forbids (whatever its attributes).
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)

PAGES = ["/monitoring/", "/monitoring/live/", "/monitoring/alerts/", "/monitoring/audit/", "/monitoring/killswitch/"]


def test_the_inline_script_check_catches_a_script_with_attributes():
    assert INLINE_SCRIPT.search('<script type="module">alert(1)</script>')
    assert INLINE_SCRIPT.search("<SCRIPT>alert(1)</SCRIPT>")
    assert not INLINE_SCRIPT.search('<script src="/static/js/app.js" defer></script>')


@pytest.mark.parametrize("path", PAGES)
def test_operators_see_the_page(client, olivia, path):
    client.force_login(olivia)
    response = client.get(path)
    assert response.status_code == 200
    assert not INLINE_SCRIPT.search(response.content.decode())


@pytest.mark.parametrize("path", PAGES)
def test_researchers_are_told_it_does_not_exist(client, alice, path):
    client.force_login(alice)
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_the_dashboard_shows_running_evaluations_with_their_latest_sample_and_recent_alerts(
    client, olivia, alice, alice_api
):
    evaluation = Evaluation.objects.get(pk=submit(alice_api, code="print(1)").json()["id"])
    evaluation.claim("worker-1")
    ResourceSample.objects.create(
        evaluation_id=evaluation.pk, at=timezone.now(), cpu_percent=87.0, memory_bytes=50 << 20, pids=7
    )
    raise_alert(evaluation_id=evaluation.pk, rule_name="fork-bomb", severity="critical", message="<b>many</b>")
    client.force_login(olivia)
    page = client.get("/monitoring/").content.decode()
    assert str(evaluation.pk)[:8] in page
    assert "87%" in page and "7 / " in page
    assert "&lt;b&gt;many&lt;/b&gt;" in page and "<b>many</b>" not in page
    assert 'href="/admin/django-rq/"' in page
    assert 'id="rate-chart"' in page


def test_the_dashboard_costs_a_bounded_number_of_queries(client, olivia, alice_api, django_assert_max_num_queries):
    for _ in range(5):
        evaluation = Evaluation.objects.get(pk=submit(alice_api, code="print(1)").json()["id"])
        evaluation.claim("w")
        raise_alert(evaluation_id=evaluation.pk, rule_name="r", severity="info", message="m")
    client.force_login(olivia)
    with django_assert_max_num_queries(20):
        assert client.get("/monitoring/").status_code == 200


def test_the_header_badge_counts_unacknowledged_alerts_for_operators_only(client, olivia, alice):
    raise_alert(evaluation_id=uuid.uuid4(), rule_name="a", severity="warning", message="m")
    raise_alert(evaluation_id=uuid.uuid4(), rule_name="b", severity="warning", message="m")
    client.force_login(olivia)
    page = client.get("/").content.decode()
    assert 'id="alert-badge"' in page and ">2<" in page
    client.force_login(alice)
    assert 'id="alert-badge"' not in client.get("/").content.decode()


def test_acknowledging_an_alert_is_audited_once(client, olivia):
    alert = raise_alert(evaluation_id=uuid.uuid4(), rule_name="fork-bomb", severity="critical", message="m")
    client.force_login(olivia)
    url = f"/monitoring/alerts/{alert.pk}/acknowledge/"
    assert client.post(url).status_code == 302
    assert client.post(url).status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == olivia and alert.acknowledged_at is not None
    events = AuditEvent.objects.filter(action="alert.acknowledge")
    assert events.count() == 1
    assert events[0].actor_name == "olivia" and events[0].target == f"alert:{alert.pk}"
    assert events[0].details["rule"] == "fork-bomb"
    assert f'data-alert-id="{alert.pk}"' not in client.get("/monitoring/alerts/").content.decode()
    assert f'data-alert-id="{alert.pk}"' in client.get("/monitoring/alerts/?show=all").content.decode()


def test_researchers_cannot_acknowledge_and_unknown_alerts_are_404(client, alice, olivia):
    alert = raise_alert(evaluation_id=uuid.uuid4(), rule_name="x", severity="info", message="m")
    client.force_login(alice)
    assert client.post(f"/monitoring/alerts/{alert.pk}/acknowledge/").status_code == 404
    assert Alert.objects.unacknowledged().count() == 1
    client.force_login(olivia)
    assert client.post("/monitoring/alerts/999999/acknowledge/").status_code == 404
    assert client.get(f"/monitoring/alerts/{alert.pk}/acknowledge/").status_code == 405


def test_the_audit_log_is_searchable_by_action_actor_and_target(client, olivia, alice):
    record("evaluation.submit", actor=alice, target="aaaa-1111")
    record("evaluation.stop", actor=olivia, target="bbbb-2222")
    record("reconciler.requeue", target="cccc-3333")
    client.force_login(olivia)

    def rows(**query):
        response = client.get("/monitoring/audit/", query)
        assert response.status_code == 200
        body = response.content.decode()
        return [t for t in ("aaaa-1111", "bbbb-2222", "cccc-3333") if t in body]

    assert rows() == ["aaaa-1111", "bbbb-2222", "cccc-3333"]
    assert rows(action="evaluation.") == ["aaaa-1111", "bbbb-2222"]
    assert rows(actor="alice") == ["aaaa-1111"]
    assert rows(actor="system") == ["cccc-3333"]
    assert rows(target="bbbb") == ["bbbb-2222"]


def test_the_audit_log_is_paginated_and_rejects_a_bad_page(client, olivia):
    for i in range(60):
        record("test.event", target=f"target-{i:03d}")
    client.force_login(olivia)
    first = client.get("/monitoring/audit/", {"action": "test."}).content.decode()
    assert "target-059" in first and "target-009" not in first and 'rel="next"' in first
    second = client.get("/monitoring/audit/", {"action": "test.", "page": 2}).content.decode()
    assert "target-009" in second and 'rel="next"' not in second
    assert client.get("/monitoring/audit/", {"page": "zero"}).status_code == 400
    assert client.get("/monitoring/audit/", {"page": "0"}).status_code == 400


def test_an_emergency_stop_raises_an_alert_and_an_audit_entry(alice_api):
    evaluation_id = submit(alice_api, code="print(1)").json()["id"]
    response = alice_api.post(f"/api/v1/evaluations/{evaluation_id}/stop/")
    assert response.status_code == 202
    assert Evaluation.objects.get(pk=evaluation_id).status == Status.STOPPED
    alert = Alert.objects.get(evaluation_id=evaluation_id)
    assert (alert.rule_name, alert.severity) == ("emergency_stop", "critical")
    assert "alice" in alert.message
    assert AuditEvent.objects.filter(action="evaluation.stop", target=evaluation_id).exists()


def test_the_dashboard_says_which_runtime_sandboxes_get_and_warns_without_gvisor(client, olivia, settings):
    client.force_login(olivia)
    settings.SANDBOX_RUNTIME = "auto"
    page = client.get("/monitoring/").content.decode()
    assert 'data-runtime="runsc"' in page and "under <strong>gVisor</strong>" in page
    settings.SANDBOX_RUNTIME = "runc"
    page = client.get("/monitoring/").content.decode()
    assert 'data-runtime="runc"' in page and "runtime-state--weak" in page and "without gVisor" in page


@pytest.mark.docker
def test_the_dashboard_shows_each_workers_warm_sandboxes(client, olivia, settings):
    settings.SANDBOX_POOL_SIZE = 2
    connection = django_rq.get_connection("default")
    worker = Worker([], connection=connection, name=f"pooled-{uuid.uuid4().hex[:8]}")
    worker.register_birth()
    try:
        pool.WarmPool(worker.name, 2, warm_profiles).refill_once()
        client.force_login(olivia)
        page = client.get("/monitoring/").content.decode()
        row = page[page.index(worker.name) :]
        assert '<td class="warm-pool">2 / 2</td>' in row[: row.index("</tr>")]
    finally:
        worker.register_death()
        pool.remove_pools_of(worker.name)


def test_olivia_acknowledges_the_ticked_alerts_at_once_each_audited(client, olivia):
    first, second, third = (
        raise_alert(evaluation_id=uuid.uuid4(), rule_name=name, severity="warning", message="m")
        for name in ("a", "b", "c")
    )
    client.force_login(olivia)
    page = client.get("/monitoring/alerts/").content.decode()
    assert 'id="acknowledge-selected"' in page and f'value="{first.pk}" form="bulk-acknowledge"' in page
    response = client.post("/monitoring/alerts/acknowledge/", {"alert": [first.pk, second.pk, 999999]})
    assert response.status_code == 302
    assert list(Alert.objects.unacknowledged().values_list("pk", flat=True)) == [third.pk]
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 2
    client.post("/monitoring/alerts/acknowledge/", {"all": "1"})
    assert not Alert.objects.unacknowledged().exists()
    assert client.post("/monitoring/alerts/acknowledge/", {"alert": ["1; drop"]}).status_code == 400


def test_researchers_cannot_bulk_acknowledge(client, alice):
    raise_alert(evaluation_id=uuid.uuid4(), rule_name="x", severity="info", message="m")
    client.force_login(alice)
    assert client.post("/monitoring/alerts/acknowledge/", {"all": "1"}).status_code == 404
    assert Alert.objects.unacknowledged().count() == 1


def test_audit_details_are_shown_as_json_not_python_reprs(client, olivia):
    record("alert.acknowledge", actor=olivia, target="alert:1", rule="fork-bomb", evaluation="")
    client.force_login(olivia)
    page = client.get("/monitoring/audit/").content.decode()
    assert "{&quot;evaluation&quot;: &quot;&quot;, &quot;rule&quot;: &quot;fork-bomb&quot;}" in page
    assert "&#x27;rule&#x27;" not in page
