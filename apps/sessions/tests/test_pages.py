"""The session pages (/sessions/, /sessions/<id>/), their end and stop buttons, and the sessions admin.

Rows are written as the session host writes them; ending a session that no host holds needs no host
(``services.end`` tells the host only when the row names one). test_pages_live.py and the browser
test drive a real host."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.monitoring.models import Alert
from apps.sessions.models import EndReason, Status
from apps.sessions.tests.factories import add_step, make_session

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(session) -> str:
    return f"/sessions/{session.pk}/"


# --- the list ------------------------------------------------------------------------------


def test_alice_lists_her_own_sessions_and_never_bobs(alice, bob):
    hers = make_session(alice)
    his = make_session(bob)
    body = signed_in(alice).get("/sessions/").content.decode()
    assert str(hers.pk)[:8] in body
    assert str(his.pk)[:8] not in body
    assert ">Owner<" not in body


def test_olivia_the_operator_lists_everyones_sessions_with_their_owners(alice, bob, olivia):
    sessions = [make_session(alice), make_session(bob, status=Status.ENDED, end_reason=EndReason.DELETED)]
    body = signed_in(olivia).get("/sessions/").content.decode()
    assert all(str(session.pk)[:8] in body for session in sessions)
    assert ">Owner<" in body and ">bob<" in body


def test_the_list_filters_by_status(alice):
    live = make_session(alice)
    ended = make_session(alice, status=Status.ENDED, end_reason=EndReason.IDLE_TIMEOUT)
    body = signed_in(alice).get("/sessions/?status=ended").content.decode()
    assert str(ended.pk)[:8] in body and str(live.pk)[:8] not in body
    assert signed_in(alice).get("/sessions/?status=nonsense").status_code == 200


def test_anonymous_visitors_are_sent_to_sign_in(alice, client):
    session = make_session(alice)
    for path in ("/sessions/", page(session)):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_navigation_links_to_sessions(alice):
    body = signed_in(alice).get("/sessions/").content.decode()
    assert '<a href="/sessions/" aria-current="page">Sessions</a>' in body


# --- one session -----------------------------------------------------------------------------


def test_alices_session_page_shows_its_status_limits_times_metadata_and_the_live_transcript_hooks(alice):
    session = make_session(alice, metadata={"sample": "s1", "epoch": 2}, memory_mb=768, idle_timeout_s=120)
    add_step(session, 1)
    response = signed_in(alice).get(page(session))
    assert response.status_code == 200
    body = response.content.decode()
    assert "session-status--ready" in body
    assert "768 MiB" in body and "120 s" in body  # memory, idle timeout
    assert "&#x27;sample&#x27;: &#x27;s1&#x27;" in body  # the metadata, escaped
    assert f'data-ws-path="/ws/sandboxes/{session.pk}/"' in body
    assert f'href="/api/v1/sandboxes/{session.pk}/execs/?format=jsonl"' in body
    assert 'id="end-confirm"' in body
    assert 'id="stop-confirm"' not in body  # the emergency stop is the operators'
    assert "/static/js/session-detail.js" in body
    assert not INLINE_SCRIPT.search(body)


def test_bob_gets_404_for_alices_session_page_and_its_parts(alice, bob):
    session = make_session(alice)
    bob_client = signed_in(bob)
    for path in (page(session), f"{page(session)}summary/"):
        assert bob_client.get(path).status_code == 404
    assert bob_client.get("/sessions/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_olivia_sees_alices_session_with_its_owner_host_and_the_emergency_stop(alice, olivia):
    session = make_session(alice, host="session-host-7")
    body = signed_in(olivia).get(page(session)).content.decode()
    assert "owner alice" in body and "session-host-7" in body and 'id="stop-confirm"' in body


def test_hostile_text_from_the_session_is_escaped(alice):
    session = make_session(
        alice,
        status=Status.ENDED,
        end_reason=EndReason.ERROR,
        error=HOSTILE,
        metadata={"note": HOSTILE},
        image=HOSTILE[:200],
    )
    body = signed_in(alice).get(page(session)).content.decode()
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in body


def test_an_ended_session_shows_why_and_offers_no_end_button(alice):
    session = make_session(alice, status=Status.ENDED, end_reason=EndReason.IDLE_TIMEOUT)
    body = signed_in(alice).get(page(session)).content.decode()
    assert "session-status--ended" in body and "Idle Timeout" in body
    assert 'id="end-confirm"' not in body


def test_the_download_link_serves_the_transcript_as_json_lines(alice):
    session = make_session(alice)
    add_step(session, 1)
    add_step(session, 2, stdout=HOSTILE)
    response = signed_in(alice).get(f"/api/v1/sandboxes/{session.pk}/execs/?format=jsonl")
    assert response.status_code == 200, response.content[:200]
    lines = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2] and lines[1]["stdout"] == HOSTILE


# --- the buttons ----------------------------------------------------------------------------


def test_alice_ends_her_session_with_the_end_button(alice):
    session = make_session(alice)
    response = signed_in(alice).post(f"{page(session)}end/", follow=True)
    assert response.redirect_chain[-1][0] == page(session)
    session.refresh_from_db()
    assert (session.status, session.end_reason) == (Status.ENDED, EndReason.DELETED)
    assert AuditEvent.objects.filter(action="session.delete", target=str(session.pk), actor_name="alice").exists()
    assert "Session ended" in response.content.decode()


def test_the_end_button_needs_a_post_with_a_csrf_token(alice):
    session = make_session(alice)
    assert signed_in(alice).get(f"{page(session)}end/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(f"{page(session)}end/").status_code == 403
    session.refresh_from_db()
    assert session.status == Status.READY


def test_bob_cannot_end_or_stop_alices_session(alice, bob):
    session = make_session(alice)
    for action in ("end", "stop"):
        assert signed_in(bob).post(f"{page(session)}{action}/").status_code == 404
    session.refresh_from_db()
    assert session.status == Status.READY


def test_alice_has_no_emergency_stop(alice):
    session = make_session(alice)
    assert signed_in(alice).post(f"{page(session)}stop/").status_code == 404
    session.refresh_from_db()
    assert session.status == Status.READY


def test_olivias_emergency_stop_ends_the_session_raises_an_alert_and_is_audited(alice, olivia):
    session = make_session(alice)
    response = signed_in(olivia).post(f"{page(session)}stop/")
    assert response.status_code == 302
    session.refresh_from_db()
    assert (session.status, session.end_reason) == (Status.ENDED, EndReason.STOPPED)
    alert = Alert.objects.get(session_id=session.pk)
    assert alert.rule_name == "emergency_stop" and "olivia" in alert.message
    assert AuditEvent.objects.filter(action="session.stop", target=str(session.pk), actor_name="olivia").exists()


# --- the admin -------------------------------------------------------------------------------


def test_olivia_ends_selected_sessions_from_the_admin(alice, bob, olivia):
    live, ended = make_session(alice), make_session(bob, status=Status.ENDED, end_reason=EndReason.IDLE_TIMEOUT)
    changelist = reverse("admin:sandbox_sessions_session_changelist")
    client = signed_in(olivia)
    listing = client.get(changelist, {"status__exact": "ready"})
    assert listing.status_code == 200 and str(live.pk) in listing.content.decode()
    response = client.post(
        changelist,
        {"action": "end_selected", "_selected_action": [str(live.pk), str(ended.pk)], "index": 0},
        follow=True,
    )
    assert "Ended 1 session(s); 1 had ended already." in [str(m) for m in response.context["messages"]]
    live.refresh_from_db()
    ended.refresh_from_db()
    assert (live.status, live.end_reason) == (Status.ENDED, EndReason.DELETED)
    assert ended.end_reason == EndReason.IDLE_TIMEOUT  # the first reason stays


def test_the_admin_shows_sessions_and_steps_read_only(alice, olivia):
    session = make_session(alice)
    step = add_step(session, 1, stdout=HOSTILE)
    client = signed_in(olivia)
    body = client.get(reverse("admin:sandbox_sessions_session_change", args=[session.pk])).content.decode()
    assert f"/sessions/{session.pk}/" in body and 'name="status"' not in body
    assert client.get(reverse("admin:sandbox_sessions_step_change", args=[step.pk])).status_code == 200
    client.post(reverse("admin:sandbox_sessions_step_change", args=[step.pk]), {"stdout": "rewritten"})
    step.refresh_from_db()
    assert step.stdout == HOSTILE
    assert client.get(reverse("admin:sandbox_sessions_step_changelist")).status_code == 200
