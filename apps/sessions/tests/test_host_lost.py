"""A session host that dies: its sessions end worker_lost and the reconciler removes their containers."""

from __future__ import annotations

import signal

import pytest
from django.test import override_settings

from apps.sandboxing import engine
from apps.sessions import reconciler
from apps.sessions.models import Session
from apps.sessions.tests.test_sessions_live import Api
from tests.stack import TestDatabaseStack, wait_until

live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def doomed_stack(django_db_setup, tmp_path):
    from django.db import connection

    stack = TestDatabaseStack(connection.settings_dict["NAME"], tmp_path, workers=0, sessions=1)
    stack.start()
    yield stack
    stack.stop()


@live
def test_when_its_host_is_killed_alices_session_ends_worker_lost_and_its_container_is_removed(doomed_stack, alice):
    alice_sessions = Api(doomed_stack.url, alice)
    created = alice_sessions.create().json()
    assert created["status"] == "ready"
    session = Session.objects.get(pk=created["id"])
    instances = doomed_stack.instances()
    doomed_stack.processes["sessions0"].send_signal(signal.SIGKILL)
    doomed_stack.processes["sessions0"].wait(10)

    wait_until(lambda: reconciler.end_lost_sessions(), timeout=60, what="the reconciler to see the host gone")
    session.refresh_from_db()
    assert (session.status, session.end_reason) == ("ended", "worker_lost")
    assert alice_sessions.exec(created["id"], ["true"]).status_code == 409

    with override_settings(CRUCIBLE_INSTANCE=instances[0]):
        removed = reconciler.remove_orphan_containers()
    assert any(container.startswith(session.container_id[:12]) for container in removed)
    assert not engine.client().api.containers(all=True, filters={"id": session.container_id})
