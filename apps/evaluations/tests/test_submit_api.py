"""POST /api/v1/evaluations/: validation, limits, idempotency, capacity. No sandbox runs here."""

import pytest

from apps.evaluations.models import Evaluation
from apps.evaluations.tests.helpers import URL, submit

pytestmark = pytest.mark.django_db


def test_alice_submits_and_gets_a_queued_evaluation_with_the_defaults_applied(alice_api, settings):
    response = submit(alice_api, code="print(1)")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["language"] == "python"
    assert body["owner"] == "alice"
    assert body["limits_requested"] == {"timeout_s": None, "memory_mb": None, "cpus": None}
    assert body["limits"]["timeout_s"] == settings.SANDBOX_DEFAULT_TIMEOUT_S
    assert body["limits"]["memory_mb"] == settings.SANDBOX_DEFAULT_MEMORY_MB
    assert len(body["code_sha256"]) == 64


def test_asked_limits_are_recorded_and_applied(alice_api):
    body = submit(alice_api, code="echo hi", language="bash", timeout_s=2.5, memory_mb=64, cpus=0.5).json()
    assert body["limits_requested"] == {"timeout_s": 2.5, "memory_mb": 64, "cpus": 0.5}
    assert body["limits"]["timeout_s"] == 2.5
    assert body["limits"]["memory_mb"] == 64


def test_a_null_limit_means_the_default_not_an_error(alice_api, settings):
    body = submit(alice_api, code="print(1)", timeout_s=None, memory_mb=None, cpus=None).json()
    assert body["limits_requested"] == {"timeout_s": None, "memory_mb": None, "cpus": None}
    assert body["limits"]["timeout_s"] == settings.SANDBOX_DEFAULT_TIMEOUT_S
    assert body["limits"]["memory_mb"] == settings.SANDBOX_DEFAULT_MEMORY_MB
    assert body["limits"]["cpus"] == settings.SANDBOX_DEFAULT_CPUS


def test_anonymous_submissions_are_refused(anonymous_api):
    assert submit(anonymous_api).status_code in (401, 403)
    assert Evaluation.objects.count() == 0


def test_code_over_the_size_limit_is_413_and_nothing_is_stored(alice_api, settings):
    response = submit(alice_api, code="x" * (settings.SANDBOX_MAX_CODE_BYTES + 1))
    assert response.status_code == 413
    assert "code" in response.json()["error"]
    assert Evaluation.objects.count() == 0


def test_a_body_over_the_request_limit_is_413(alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = submit(alice_api, code="print(1)", stdin="y" * 4096)
    assert response.status_code == 413
    assert Evaluation.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_s", 0),
        ("timeout_s", 10**9),
        ("memory_mb", 10**9),
        ("cpus", 64),
        ("timeout_s", "ten"),
        ("timeout_s", True),
        ("memory_mb", 1.5),
        ("cpus", "NaN"),
        ("language", "cobol"),
        ("language", 3),
        ("code", 42),
        ("code", ""),
        ("stdin", ["a"]),
        ("priority", "urgent"),
        ("metadata", "not an object"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(alice_api, field, value):
    body = {"code": "print(1)", field: value}
    response = alice_api.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Evaluation.objects.count() == 0


def test_malformed_json_is_400(alice_api):
    response = alice_api.post(URL, data='{"code": "print(1)"', content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_a_json_array_body_is_400(alice_api):
    response = alice_api.post(URL, data="[1, 2]", content_type="application/json")
    assert response.status_code == 400


def test_unknown_fields_are_refused(alice_api):
    response = submit(alice_api, code="print(1)", network=True)
    assert response.status_code == 400
    assert "network" in str(response.json())


def test_nul_in_code_is_400_not_500(alice_api):
    response = submit(alice_api, code="print(1)\x00")
    assert response.status_code == 400


class TestIdempotency:
    def test_same_key_and_body_returns_the_same_evaluation_with_200(self, alice_api):
        first = alice_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = alice_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert Evaluation.objects.count() == 1

    def test_same_key_with_another_body_is_409(self, alice_api):
        alice_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
        other = alice_api.post(URL, {"code": "print(2)"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
        assert other.status_code == 409
        assert Evaluation.objects.count() == 1

    def test_an_overlong_key_is_400_naming_the_header(self, alice_api):
        response = alice_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 201)
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()
        assert Evaluation.objects.count() == 0

    def test_keys_belong_to_their_user(self, alice_api, bob_api):
        a = alice_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
        b = bob_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
        assert a.status_code == b.status_code == 201
        assert a.json()["id"] != b.json()["id"]


def test_a_full_queue_is_429_with_retry_after_and_the_accepted_ones_stay(alice_api, bob_api, settings):
    settings.QUEUE_CAPACITY = 2
    assert submit(alice_api).status_code == 201
    assert submit(alice_api).status_code == 201
    response = submit(bob_api)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "queue is full" in response.json()["error"]
    assert Evaluation.objects.filter(status="queued").count() == 2


def test_the_submission_is_audited_with_the_code_hash(alice_api):
    from apps.audit.models import AuditEvent

    body = submit(alice_api).json()
    event = AuditEvent.objects.get(action="evaluation.submit", target=body["id"])
    assert event.actor_name == "alice"
    assert event.details["code_sha256"] == body["code_sha256"]
