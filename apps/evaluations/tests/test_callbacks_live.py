"""The whole stack as an operator runs it (Daphne and a crucible_worker in their own processes, the
real engine): a script makes a webhook secret and submits with a callback_url over HTTP, and the
worker process POSTs the signed end to a receiver on this machine (allowed by CALLBACK_ALLOWED_HOSTS
in the stack's environment, as an operator would set it)."""

from __future__ import annotations

import json

import pytest
import requests

from apps.accounts.models import ApiToken
from apps.evaluations.callbacks.signing import verify
from apps.evaluations.tests.receiver import Receiver
from tests.stack import TestDatabaseStack, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def callback_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """Daphne + one worker on the test database, allowed to call back to 127.0.0.1."""
    from django.db import connection

    with pytest.MonkeyPatch.context() as env:
        env.setenv("CALLBACK_ALLOWED_HOSTS", "127.0.0.1")
        stack = TestDatabaseStack(connection.settings_dict["NAME"], tmp_path_factory.mktemp("callback-stack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_a_worker_process_posts_the_signed_end_of_a_run_to_its_callback_url(alice, callback_stack):
    headers = {"Authorization": f"Token {ApiToken.issue(alice, 'script')[1]}"}
    api = callback_stack.url + "/api/v1"
    secret = requests.post(f"{api}/me/webhook-secret/", headers=headers, timeout=10).json()["webhook_secret"]
    with Receiver() as receiver:
        submitted = requests.post(
            f"{api}/evaluations/",
            json={"code": "print('called back')", "callback_url": receiver.url + "/crucible"},
            headers=headers,
            timeout=30,
        )
        assert submitted.status_code == 201, submitted.text
        [request] = wait_until(lambda: receiver.requests, 120, what="the callback")
    assert verify(request.body, secret, request.headers["X-Crucible-Signature"])
    body = json.loads(request.body)
    detail = requests.get(f"{api}/evaluations/{submitted.json()['id']}/", headers=headers, timeout=10).json()
    assert body == {"type": "evaluation.finished", "evaluation": detail}
    assert detail["status"] == "succeeded"
    deliveries = wait_until(
        lambda: [
            d
            for d in requests.get(f"{api}/evaluations/{detail['id']}/callbacks/", headers=headers, timeout=10).json()
            if d["status"] == "delivered"
        ],
        30,
        what="the delivery to be recorded",
    )
    assert deliveries[0]["attempt_log"][0]["status_code"] == 200
