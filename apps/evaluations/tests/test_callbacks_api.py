"""callback_url on POST /api/v1/evaluations/ (refused with a 400 naming it when it could reach the
platform's own network) and GET /api/v1/evaluations/{id}/callbacks/ (the owner's, and operators')."""

import pytest

from apps.evaluations.callbacks import delivery, events
from apps.evaluations.models import CallbackDelivery, Evaluation
from apps.evaluations.tests.helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def nothing_allowed(settings):
    settings.CALLBACK_ALLOWED_HOSTS = []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_a_callback_to_loopback_private_or_link_local_is_400_and_nothing_is_created(alice_api, url):
    response = submit(alice_api, callback_url=url)
    assert response.status_code == 400, response.content
    assert "CALLBACK_ALLOWED_HOSTS" in response.json()["callback_url"][0]
    assert Evaluation.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("https://user:secret@example.com/", "user name or password"),
        ("https://example.com/" + "x" * 2000, "at most 2000"),
        (42, "string"),
        ("https://nowhere.invalid/hook", "does not resolve"),
    ],
)
def test_a_callback_url_that_is_not_usable_is_400_with_a_clear_message(alice_api, url, says):
    response = submit(alice_api, callback_url=url)
    assert response.status_code == 400
    assert says in response.json()["callback_url"][0]
    assert Evaluation.objects.count() == 0


def test_an_operator_allowed_receiver_is_accepted_and_shown_back(alice_api, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.0/8"]
    response = submit(alice_api, callback_url="http://localhost:9000/hook")
    assert response.status_code == 201, response.content
    assert response.json()["callback_url"] == "http://localhost:9000/hook"
    assert Evaluation.objects.get().callback_url == "http://localhost:9000/hook"


def test_without_a_callback_url_the_field_is_null(alice_api):
    assert submit(alice_api).json()["callback_url"] is None


def _tried_once_and_got_a_500(evaluation_id) -> CallbackDelivery:
    evaluation = Evaluation.objects.get(pk=evaluation_id)
    found = delivery.schedule(evaluation.owner, evaluation.callback_url, events.EVALUATION_FINISHED, evaluation.pk, {})
    CallbackDelivery.objects.filter(pk=found.pk).update(
        attempts=1, last_status_code=500, last_error="answered HTTP 500"
    )
    found.attempt_log.create(number=1, started_at=found.created_at, duration_ms=3, address="127.0.0.1", status_code=500)
    return found


def test_alice_sees_the_deliveries_of_her_evaluation_with_every_attempt(alice_api, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
    evaluation_id = submit(alice_api, callback_url="http://127.0.0.1:9/hook").json()["id"]
    found = _tried_once_and_got_a_500(evaluation_id)
    response = alice_api.get(f"/api/v1/evaluations/{evaluation_id}/callbacks/")
    assert response.status_code == 200
    [shown] = response.json()
    assert shown["id"] == str(found.pk)
    assert (shown["event"], shown["url"], shown["status"], shown["attempts"]) == (
        "evaluation.finished",
        "http://127.0.0.1:9/hook",
        "pending",
        1,
    )
    assert shown["attempt_log"] == [
        {
            "number": 1,
            "started_at": shown["attempt_log"][0]["started_at"],
            "duration_ms": 3,
            "address": "127.0.0.1",
            "status_code": 500,
            "error": "",
        }
    ]
    assert "body" not in shown


def test_bob_cannot_see_alices_deliveries_it_is_404(alice_api, bob_api, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
    evaluation_id = submit(alice_api, callback_url="http://127.0.0.1:9/hook").json()["id"]
    _tried_once_and_got_a_500(evaluation_id)
    assert bob_api.get(f"/api/v1/evaluations/{evaluation_id}/callbacks/").status_code == 404


def test_olivia_the_operator_sees_them(alice_api, olivia_api, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
    evaluation_id = submit(alice_api, callback_url="http://127.0.0.1:9/hook").json()["id"]
    _tried_once_and_got_a_500(evaluation_id)
    assert len(olivia_api.get(f"/api/v1/evaluations/{evaluation_id}/callbacks/").json()) == 1


def test_an_evaluation_without_callbacks_lists_none(alice_api):
    evaluation_id = submit(alice_api).json()["id"]
    assert alice_api.get(f"/api/v1/evaluations/{evaluation_id}/callbacks/").json() == []
