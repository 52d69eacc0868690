"""Moving AuditEvent from monitoring to audit changes no table: an existing installation keeps its
history, and the permissions already granted on the model follow it (its content type moves)."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("audit", None)]  # unapplies audit 0001 and monitoring 0004, which needs it


def migrate(targets) -> object:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor.migrate(targets)


def test_an_installation_from_before_the_move_keeps_its_events_and_their_permissions():
    migrate(BEFORE_THE_MOVE)
    old = (
        MigrationExecutor(connection)
        .loader.project_state(
            [("monitoring", "0003_default_safety_rules"), ("contenttypes", "0002_remove_content_type_name")]
        )
        .apps
    )
    old_type, _ = old.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="monitoring", model="auditevent"
    )
    old.get_model("monitoring", "AuditEvent").objects.create(action="auth.login", actor_name="alice")

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert list(AuditEvent.objects.values_list("action", "actor_name")) == [("auth.login", "alice")]
    moved = ContentType.objects.get_for_model(AuditEvent)
    assert (moved.pk, moved.app_label) == (old_type.pk, "audit")
    assert not ContentType.objects.filter(app_label="monitoring", model="auditevent").exists()
