"""The audit trail: rows are only ever appended; record() names the actor or the system; search filters."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from apps.audit import services as audit
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_an_event_names_its_actor_target_address_and_details(alice):
    request = RequestFactory().post("/", REMOTE_ADDR="192.0.2.9")
    event = audit.record("evaluation.submit", actor=alice, target="x" * 300, request=request, language="python")
    event.refresh_from_db()
    assert (event.actor, event.actor_name, event.source_ip) == (alice, "alice", "192.0.2.9")
    assert event.target == "x" * 200
    assert event.details == {"language": "python"}


def test_an_anonymous_actor_is_recorded_as_the_system():
    event = audit.record("reconciler.requeue", actor=AnonymousUser(), target="t")
    assert event.actor is None and event.actor_name == ""


def test_events_can_be_neither_changed_nor_deleted(alice):
    event = audit.record("auth.login", actor=alice)
    event.action = "auth.nothing_happened"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "auth.login"


def test_the_actors_name_outlives_the_user(alice):
    event = audit.record("auth.login", actor=alice)
    alice.delete()
    event.refresh_from_db()
    assert event.actor is None and event.actor_name == "alice"


def test_search_filters_by_action_prefix_actor_and_target_newest_first(alice, bob):
    audit.record("evaluation.submit", actor=alice, target="aaaa-1111")
    audit.record("evaluation.stop", actor=bob, target="bbbb-2222")
    audit.record("reconciler.requeue", target="cccc-3333")

    def targets(**filters):
        return [event.target for event in audit.search(**filters)]

    assert targets() == ["cccc-3333", "bbbb-2222", "aaaa-1111"]
    assert targets(action="EVALUATION.") == ["bbbb-2222", "aaaa-1111"]
    assert targets(actor="Alice") == ["aaaa-1111"]
    assert targets(actor="system") == ["cccc-3333"]
    assert targets(target="bbbb") == ["bbbb-2222"]
    assert targets(action="evaluation.", actor="bob", target="2222") == ["bbbb-2222"]
