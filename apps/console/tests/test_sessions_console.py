"""Sessions in the operator console: the dashboard's live sessions, the kill switch ending them, the metrics.

Session rows are written as the session host writes them; test_killswitch_sessions_live.py engages the
kill switch over a real session host and real sandboxes."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.audit.models import AuditEvent
from apps.evaluations import killswitch
from apps.sessions import services
from apps.sessions.models import EndReason, Status
from apps.sessions.tests.factories import add_step, make_session

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_dashboard_lists_live_sessions_with_owner_host_steps_and_a_link(alice, bob, olivia):
    live = make_session(alice, host="session-host-1")
    add_step(live, 1)
    add_step(live, 2)
    ended = make_session(bob, status=Status.ENDED, end_reason=EndReason.DELETED)
    for path in ("/monitoring/", "/monitoring/live/"):
        body = signed_in(olivia).get(path).content.decode()
        assert 'id="live-session-count">(1)<' in body
        row = body[body.index(f'data-session="{live.pk}"') :]
        row = row[: row.index("</tr>")]
        assert f'href="/sessions/{live.pk}/"' in row
        assert "<td>alice</td>" in row and "session-host-1" in row and "<td>2</td>" in row
        assert f'data-session="{ended.pk}"' not in body


def test_the_dashboard_says_when_no_session_is_live(olivia):
    assert "No session is live." in signed_in(olivia).get("/monitoring/").content.decode()


def test_the_kill_switch_page_says_it_ends_live_sessions(alice, olivia):
    make_session(alice)
    body = signed_in(olivia).get("/monitoring/killswitch/").content.decode()
    assert "ends every live session" in body and "end 1 live session and pause" in body


def test_the_kill_switch_ends_every_live_session_and_says_which(alice, bob, olivia_api):
    sessions = [make_session(alice), make_session(alice, status=Status.STARTING), make_session(bob)]
    already = make_session(bob, status=Status.ENDED, end_reason=EndReason.IDLE_TIMEOUT)
    response = olivia_api.post("/api/v1/killswitch/", {"engaged": True}, format="json")
    assert response.status_code == 200, response.content
    assert sorted(response.json()["sessions_ended"]) == sorted(str(s.pk) for s in sessions)
    assert response.json()["stopped"] == []
    for session in sessions:
        session.refresh_from_db()
        assert (session.status, session.end_reason) == (Status.ENDED, EndReason.KILL_SWITCH)
    already.refresh_from_db()
    assert already.end_reason == EndReason.IDLE_TIMEOUT
    assert AuditEvent.objects.filter(action="session.end", details__reason="kill_switch").count() == 3
    # No new session starts while the switch is engaged.
    with pytest.raises(services.SessionError) as refused:
        services.create(sessions[0].owner, fields={})
    assert refused.value.status == 503


def test_the_kill_switch_form_ends_live_sessions_too(alice, olivia):
    session = make_session(alice)
    response = signed_in(olivia).post("/monitoring/killswitch/", {"engaged": "true", "confirm": "yes"}, follow=True)
    assert "0 evaluation(s) stopped, 1 session(s) ended, queues paused." in response.content.decode()
    session.refresh_from_db()
    assert session.end_reason == EndReason.KILL_SWITCH
    assert killswitch.is_engaged()


def scrape(client) -> dict:
    response = client.get("/api/v1/metrics/")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_count_live_sessions_by_status_ended_ones_by_reason_and_steps(alice, bob, olivia):
    ready = make_session(alice)
    add_step(ready, 1)
    add_step(ready, 2)
    make_session(bob, status=Status.STARTING)
    make_session(bob, status=Status.ENDED, end_reason=EndReason.IDLE_TIMEOUT)
    samples = scrape(signed_in(olivia))
    assert samples[("crucible_sessions_live", (("status", "ready"),))] == 1
    assert samples[("crucible_sessions_live", (("status", "starting"),))] == 1
    assert samples[("crucible_sessions_ended_total", (("reason", "idle_timeout"),))] == 1
    assert samples[("crucible_session_steps_total", ())] == 2
