"""How sessions end by themselves and by operators' hands, with a real session host and real sandboxes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from apps.audit.models import AuditEvent
from apps.monitoring.models import Alert, SafetyRule
from apps.sandboxing import containers, engine, engine_runtime
from apps.sessions.models import Session
from apps.sessions.tests.test_sessions_live import Api
from tests.stack import live_sessions_stack, wait_until  # noqa: F401 (the fixture)

live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_sessions(live_sessions_stack, alice):  # noqa: F811
    return Api(live_sessions_stack.url, alice)


@pytest.fixture
def olivia_sessions(live_sessions_stack, olivia):  # noqa: F811
    return Api(live_sessions_stack.url, olivia)


def ended(session_id, timeout=30):
    return wait_until(
        lambda: (s := Session.objects.get(pk=session_id)).status == "ended" and s, timeout, what="the session to end"
    )


def container_gone(session):
    def gone():
        return not engine.client().api.containers(all=True, filters={"id": session.container_id})

    return wait_until(gone, 30, what="the session's container to be removed")


@live
def test_a_session_left_idle_ends_at_its_idle_timeout_and_its_container_goes(alice_sessions):
    created = alice_sessions.create(idle_timeout_s=2).json()
    assert created["status"] == "ready"
    session = ended(created["id"])
    assert session.end_reason == "idle_timeout"
    assert container_gone(session)


@live
def test_a_busy_session_still_ends_at_its_lifetime(alice_sessions):
    created = alice_sessions.create(max_lifetime_s=4, idle_timeout_s=60).json()
    result = alice_sessions.exec(created["id"], ["sleep", "10"], timeout_s=20)
    assert result.status_code in (200, 409)
    session = ended(created["id"])
    assert session.end_reason == "max_lifetime"
    assert container_gone(session)


@live
def test_output_that_matches_a_stop_rule_ends_the_session_safety_stopped_with_an_alert(alice_sessions):
    SafetyRule.objects.update_or_create(
        name="cloud-metadata",
        defaults={"kind": "output_pattern", "pattern": r"169\.254\.169\.254", "severity": "critical", "action": "stop"},
    )
    created = alice_sessions.create().json()
    answer = alice_sessions.exec(created["id"], ["echo", "curl http://169.254.169.254/latest"]).json()
    assert answer["returncode"] == 0  # the exec is answered; the session ends after
    session = ended(created["id"])
    assert session.end_reason == "safety_stopped"
    alert = Alert.objects.get(session_id=created["id"])
    assert alert.rule_name == "cloud-metadata" and alert.evaluation_id is None
    assert container_gone(session)


@live
def test_an_operators_emergency_stop_ends_alices_session_with_an_alert_and_an_audit_entry(
    alice_sessions, olivia_sessions
):
    created = alice_sessions.create().json()
    response = olivia_sessions.http.post(f"{olivia_sessions.base}{created['id']}/stop/", timeout=30)
    assert response.status_code == 202
    assert response.json()["end_reason"] == "stopped"
    assert Alert.objects.get(session_id=created["id"]).rule_name == "emergency_stop"
    assert AuditEvent.objects.filter(action="session.stop", target=created["id"], actor_name="olivia").exists()
    assert container_gone(Session.objects.get(pk=created["id"]))
    assert alice_sessions.exec(created["id"], ["true"]).status_code == 409


@live
def test_alice_cannot_stop_or_see_bobs_session_but_may_stop_her_own(alice_sessions, live_sessions_stack, bob):  # noqa: F811
    bobs = Api(live_sessions_stack.url, bob).create().json()
    assert alice_sessions.http.post(f"{alice_sessions.base}{bobs['id']}/stop/", timeout=30).status_code == 404
    own = alice_sessions.create().json()
    assert alice_sessions.http.post(f"{alice_sessions.base}{own['id']}/stop/", timeout=30).status_code == 202
    assert Session.objects.get(pk=bobs["id"]).status == "ready"


@live
def test_a_session_whose_sandbox_dies_ends_sandbox_exited(alice_sessions):
    created = alice_sessions.create().json()
    engine.client().api.kill(Session.objects.get(pk=created["id"]).container_id)
    session = ended(created["id"])
    assert session.end_reason == "sandbox_exited"
    assert container_gone(session)


def the_sandbox_kernels_host_process(container_id: str) -> int:
    """The host process the host's OOM killer would pick: gVisor's kernel (``runsc-sandbox``) under
    gVisor, the container's main process under runc."""
    for pid in containers.runtime_processes(container_id):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv and argv[0].endswith(b"runsc-sandbox"):
            return pid
    return engine.client().api.inspect_container(container_id)["State"]["Pid"]


@live
def test_a_session_whose_sandbox_the_host_kernel_kills_ends_saying_so(alice_sessions):
    """The host's OOM killer SIGKILLs a gVisor sandbox's kernel with no "kill" through the engine, and
    the engine does not always record it as an OOM kill: the session says the host's kernel ended it
    at its limits, not that its main process exited."""
    created = alice_sessions.create().json()
    container_id = Session.objects.get(pk=created["id"]).container_id
    os.kill(the_sandbox_kernels_host_process(container_id), signal.SIGKILL)
    session = ended(created["id"])
    assert session.end_reason == "sandbox_exited"
    if engine_runtime.is_gvisor(engine_runtime.chosen()):
        assert "killed by the host's kernel at its limits (out of memory" in session.error, session.error
    else:
        # Under runc the sandbox's own kernel is the host's: what it killed was the main process.
        assert session.error == "the sandbox's container stopped: its main process exited (137)", session.error
    assert container_gone(session)


@live
def test_alice_over_her_quota_of_live_sessions_gets_429_with_retry_after(alice_sessions, alice):
    from django.conf import settings

    # Sessions a host elsewhere serves: rows are all the quota counts.
    for _ in range(settings.SESSION_MAX_ACTIVE_PER_USER):
        Session.objects.create(
            owner=alice, image="x", memory_mb=64, cpus=1, idle_timeout_s=60, max_lifetime_s=60, status="ready"
        )
    refused = alice_sessions.create()
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "live sessions" in refused.json()["detail"]
    assert Session.objects.filter(owner=alice).count() == settings.SESSION_MAX_ACTIVE_PER_USER
