"""End to end on the real engine: a submitted evaluation runs in its sandbox through a real worker
(in-process, on the real queues), and its end is POSTed, signed, to a receiver on this machine."""

import json

import pytest

from apps.evaluations.callbacks.signing import verify
from apps.evaluations.models import CallbackDelivery, DeliveryStatus
from apps.evaluations.tests.helpers import run_and_wait
from apps.evaluations.tests.receiver import Receiver

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


def test_a_run_that_ends_is_posted_to_its_callback_url_signed(alice_api, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
    secret = alice_api.post("/api/v1/me/webhook-secret/").json()["webhook_secret"]
    with Receiver() as receiver:
        evaluation = run_and_wait(alice_api, code="print(6 * 7)", callback_url=receiver.url + "/done")
    assert evaluation.status == "succeeded"
    [request] = receiver.requests
    assert verify(request.body, secret, request.headers["X-Crucible-Signature"])
    body = json.loads(request.body)
    assert body["type"] == "evaluation.finished"
    assert (body["evaluation"]["id"], body["evaluation"]["status"], body["evaluation"]["exit_code"]) == (
        str(evaluation.pk),
        "succeeded",
        0,
    )
    assert CallbackDelivery.objects.get(subject_id=str(evaluation.pk)).status == DeliveryStatus.DELIVERED
    assert alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/callbacks/").json()[0]["status"] == "delivered"
