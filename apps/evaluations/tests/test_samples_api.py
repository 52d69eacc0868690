"""GET /api/v1/evaluations/{id}/samples/: the resource graph's data, for the owner and operators only."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from apps.evaluations.tests.helpers import submit
from apps.monitoring.models import ResourceSample

pytestmark = pytest.mark.django_db


def test_the_owner_and_operators_see_the_samples_and_limits_and_others_get_404(alice_api, bob_api, olivia_api):
    evaluation_id = submit(alice_api, code="print(1)").json()["id"]
    ResourceSample.objects.create(evaluation_id=evaluation_id, at=timezone.now(), cpu_percent=5, memory_bytes=1, pids=2)
    url = f"/api/v1/evaluations/{evaluation_id}/samples/"
    body = alice_api.get(url).json()
    assert body["samples"][0]["pids"] == 2
    assert body["limits"]["pids"] > 0 and body["limits"]["memory_bytes"] > 0
    assert olivia_api.get(url).status_code == 200
    assert bob_api.get(url).status_code == 404
    assert alice_api.get(f"/api/v1/evaluations/{uuid.uuid4()}/samples/").status_code == 404
