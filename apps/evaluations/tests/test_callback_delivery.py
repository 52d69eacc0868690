"""Completion callbacks are delivered to a real HTTP receiver on this machine (allowed through
CALLBACK_ALLOWED_HOSTS, as an operator would), signed, retried with backoff, recorded attempt by
attempt, and sent only to the address that was checked. Jobs run in-process on the real Redis."""

import ipaddress
import json
import socket
from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq.registry import ScheduledJobRegistry

from apps.accounts.services import make_webhook_secret
from apps.evaluations import publisher, services
from apps.evaluations.callbacks import delivery, events, targets
from apps.evaluations.callbacks.signing import verify
from apps.evaluations.models import CallbackDelivery, DeliveryStatus, Evaluation, Status
from apps.evaluations.tests.helpers import work_off_queues
from apps.evaluations.tests.receiver import Receiver, certificate_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_queues")]


@pytest.fixture(autouse=True)
def receivers_on_this_machine_allowed(settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CALLBACK_RETRY_BASE_S = 30.0
    settings.CALLBACK_MAX_ATTEMPTS = 5
    settings.CALLBACK_TIMEOUT_S = 5.0


def submitted(owner, url: str) -> Evaluation:
    evaluation, _ = services.submit(owner, {"code": "print(42)", "callback_url": url})
    return evaluation


def ended(evaluation: Evaluation, status=Status.SUCCEEDED) -> Evaluation:
    """The evaluation runs and ends as a worker would record it, and its end is published."""
    assert evaluation.claim("worker-under-test")
    assert evaluation.finish(status, exit_code=0 if status == Status.SUCCEEDED else 1)
    publisher.publish_end(evaluation)
    return evaluation


def the_delivery_of(evaluation) -> CallbackDelivery:
    return CallbackDelivery.objects.get(event_type=events.EVALUATION_FINISHED, subject_id=str(evaluation.pk))


def attempt_end(attempt):
    return attempt.started_at + timedelta(milliseconds=attempt.duration_ms)


def make_due(found: CallbackDelivery) -> None:
    """The wait before the next attempt is over (instead of sleeping through it)."""
    CallbackDelivery.objects.filter(pk=found.pk).update(next_attempt_at=timezone.now())


def test_a_finished_evaluation_is_posted_with_its_detail_signed_with_the_owners_secret(
    alice, alice_api, django_capture_on_commit_callbacks
):
    secret = make_webhook_secret(alice)
    with Receiver() as receiver:
        with django_capture_on_commit_callbacks(execute=True):
            evaluation = ended(submitted(alice, receiver.url + "/hooks/crucible?team=7"))
        work_off_queues()
    [request] = receiver.requests
    assert request.path == "/hooks/crucible?team=7"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Crucible-Event"] == "evaluation.finished"
    assert request.headers["X-Crucible-Delivery"] == str(the_delivery_of(evaluation).pk)
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert verify(request.body, secret, request.headers["X-Crucible-Signature"])
    assert not verify(request.body, "whsec_someone-elses", request.headers["X-Crucible-Signature"])
    body = json.loads(request.body)
    assert body == {
        "type": "evaluation.finished",
        "evaluation": alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/").json(),
    }
    assert body["evaluation"]["status"] == "succeeded"
    found = the_delivery_of(evaluation)
    assert (found.status, found.attempts, found.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)


def test_a_500_is_tried_again_after_the_backoff_and_the_success_is_recorded_with_every_attempt(alice):
    secret = make_webhook_secret(alice)
    with Receiver(answers=[500]) as receiver:
        evaluation = ended(submitted(alice, receiver.url + "/hook"))
        found = the_delivery_of(evaluation)
        delivery.deliver(found.pk)
        found.refresh_from_db()
        assert (found.status, found.attempts, found.last_status_code) == (DeliveryStatus.PENDING, 1, 500)
        assert found.last_error == "answered HTTP 500"
        assert found.next_attempt_at >= attempt_end(found.attempt_log.get()) + timedelta(seconds=30)
        make_due(found)
        delivery.deliver(found.pk)
    found.refresh_from_db()
    assert (found.status, found.attempts, found.last_status_code, found.last_error) == (
        DeliveryStatus.DELIVERED,
        2,
        200,
        "",
    )
    assert [(a.number, a.status_code) for a in found.attempt_log.all()] == [(1, 500), (2, 200)]
    first, second = receiver.requests
    assert (first.headers["X-Crucible-Attempt"], second.headers["X-Crucible-Attempt"]) == ("1", "2")
    assert first.headers["X-Crucible-Delivery"] == second.headers["X-Crucible-Delivery"]
    assert first.body == second.body
    assert verify(second.body, secret, second.headers["X-Crucible-Signature"])


def test_the_wait_doubles_after_each_failed_attempt_up_to_an_hour(settings):
    settings.CALLBACK_RETRY_BASE_S = 30.0
    assert [delivery.retry_delay_s(n) for n in (1, 2, 3, 4, 8, 12)] == [30, 60, 120, 240, 3600, 3600]


def test_the_next_attempt_waits_in_rqs_scheduler_until_its_time(alice, django_capture_on_commit_callbacks):
    with Receiver(answers=[500, 502]) as receiver:
        found = the_delivery_of(ended(submitted(alice, receiver.url + "/hook")))
        with django_capture_on_commit_callbacks(execute=True):
            delivery.deliver(found.pk)
        make_due(found)
        with django_capture_on_commit_callbacks(execute=True):
            delivery.deliver(found.pk)
    found.refresh_from_db()
    second = found.attempt_log.get(number=2)
    assert found.next_attempt_at >= attempt_end(second) + timedelta(seconds=60)
    registry = ScheduledJobRegistry(queue=django_rq.get_queue(delivery.delivery_queue()))
    assert delivery.job_id(found.pk, 2) in registry.get_job_ids()
    third = registry.get_scheduled_time(delivery.job_id(found.pk, 3))
    assert abs(third - found.next_attempt_at) < timedelta(seconds=1)  # RQ keeps whole seconds


def test_a_delivery_that_fails_every_attempt_ends_failed_and_is_not_tried_again(alice, settings):
    settings.CALLBACK_MAX_ATTEMPTS = 2
    with Receiver(answers=[500, 503, 200]) as receiver:
        found = the_delivery_of(ended(submitted(alice, receiver.url + "/hook"), Status.FAILED))
        delivery.deliver(found.pk)
        make_due(found)
        delivery.deliver(found.pk)
        assert delivery.deliver(found.pk) == "nothing to do"
    found.refresh_from_db()
    assert (found.status, found.attempts, found.last_status_code, found.next_attempt_at) == (
        DeliveryStatus.FAILED,
        2,
        503,
        None,
    )
    assert len(receiver.requests) == 2


def test_an_attempt_that_is_not_due_yet_sends_nothing(alice):
    with Receiver(answers=[500]) as receiver:
        found = the_delivery_of(ended(submitted(alice, receiver.url + "/hook")))
        delivery.deliver(found.pk)
        assert delivery.deliver(found.pk) == "not due, or another job has it"
    assert len(receiver.requests) == 1


def test_a_receiver_that_does_not_listen_is_an_attempt_with_an_error(alice):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    found = the_delivery_of(ended(submitted(alice, f"http://127.0.0.1:{port}/hook")))
    delivery.deliver(found.pk)
    found.refresh_from_db()
    assert (found.status, found.attempts, found.last_status_code) == (DeliveryStatus.PENDING, 1, None)
    assert "could not connect to 127.0.0.1" in found.last_error


def test_a_redirect_is_not_followed(alice):
    with Receiver() as elsewhere, Receiver(redirect_to=elsewhere.url + "/stolen") as receiver:
        found = the_delivery_of(ended(submitted(alice, receiver.url + "/hook")))
        delivery.deliver(found.pk)
    found.refresh_from_db()
    assert (found.status, found.last_status_code, found.last_error) == (
        DeliveryStatus.PENDING,
        302,
        "answered HTTP 302",
    )
    assert len(receiver.requests) == 1
    assert elsewhere.requests == []


def test_the_delivery_connects_to_the_address_it_checked_and_never_asks_dns_again(alice, settings, monkeypatch):
    """DNS rebinding: the name answers 127.0.0.1 (allowed) when checked, then the metadata service's
    address. The attempt resolves once and connects to what it checked; nothing else resolves the name."""
    with Receiver() as receiver:
        settings.CALLBACK_ALLOWED_HOSTS = ["hooks.rebind.test"]
        answers = [["127.0.0.1"], ["127.0.0.1"], ["169.254.169.254"]]
        lookups = []

        def rebinding_resolver(host, port):
            lookups.append(host)
            return [ipaddress.ip_address(a) for a in answers[min(len(lookups), len(answers)) - 1]]

        monkeypatch.setattr(targets, "_getaddrinfo", rebinding_resolver)
        real_getaddrinfo = socket.getaddrinfo

        def no_second_lookup(host, *args, **kwargs):
            assert "rebind.test" not in str(host), "the name was resolved again outside the check"
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", no_second_lookup)
        found = the_delivery_of(ended(submitted(alice, f"http://hooks.rebind.test:{receiver.port}/hook")))
        assert lookups == ["hooks.rebind.test"]  # the check at submission
        delivery.deliver(found.pk)
    assert lookups == ["hooks.rebind.test", "hooks.rebind.test"]  # one more: the attempt's own check
    [request] = receiver.requests
    assert request.headers["Host"] == f"hooks.rebind.test:{receiver.port}"
    found.refresh_from_db()
    assert found.status == DeliveryStatus.DELIVERED
    assert found.attempt_log.get().address == "127.0.0.1"


def test_a_name_that_resolves_to_a_refused_address_at_delivery_time_is_not_sent(alice, settings, monkeypatch):
    answers = iter([["93.184.215.14"], ["10.0.0.8"]])
    monkeypatch.setattr(targets, "_getaddrinfo", lambda host, port: [ipaddress.ip_address(a) for a in next(answers)])
    found = the_delivery_of(ended(submitted(alice, "https://hooks.flipping.test/hook")))
    delivery.deliver(found.pk)
    found.refresh_from_db()
    assert found.status == DeliveryStatus.PENDING
    assert found.last_error.startswith("not sent: hooks.flipping.test resolves to 10.0.0.8")


def test_the_end_of_an_evaluation_schedules_its_callback_once_however_often_it_is_published(alice):
    evaluation = ended(submitted(alice, "http://127.0.0.1:9/hook"))
    publisher.publish_end(evaluation)
    events.evaluation_finished(evaluation)
    assert CallbackDelivery.objects.filter(subject_id=str(evaluation.pk)).count() == 1


def test_scheduling_the_same_event_twice_returns_the_first_delivery(alice):
    first = delivery.schedule(alice, "http://127.0.0.1:9/a", "batch.finished", "b-1", {"n": 1})
    again = delivery.schedule(alice.pk, "http://127.0.0.1:9/b", "batch.finished", "b-1", {"n": 2})
    assert again.pk == first.pk
    assert (again.url, json.loads(again.body)) == ("http://127.0.0.1:9/a", {"n": 1})


def test_an_evaluation_without_a_callback_url_schedules_nothing(alice):
    evaluation, _ = services.submit(alice, {"code": "print(1)"})
    ended(evaluation)
    assert CallbackDelivery.objects.count() == 0


def test_a_queued_evaluation_that_is_cancelled_is_called_back_too(alice):
    evaluation = submitted(alice, "http://127.0.0.1:9/hook")
    services.cancel(evaluation, actor=alice)
    assert json.loads(the_delivery_of(evaluation).body)["evaluation"]["status"] == "cancelled"


def test_the_sweep_schedules_an_end_whose_callback_was_lost_and_enqueues_an_attempt_whose_job_was_lost(alice):
    evaluation = submitted(alice, "http://127.0.0.1:9/hook")
    assert evaluation.claim("worker-that-dies")
    long_ago = timezone.now() - timedelta(minutes=5)
    assert evaluation.finish(Status.SUCCEEDED, exit_code=0, finished_at=long_ago)  # and never published
    assert events.sweep() == [str(evaluation.pk)]
    found = the_delivery_of(evaluation)
    CallbackDelivery.objects.filter(pk=found.pk).update(next_attempt_at=long_ago)
    assert events.sweep() == [str(found.pk)]
    queue = django_rq.get_queue(delivery.delivery_queue())
    assert delivery.job_id(found.pk, 1) in queue.get_job_ids()
    assert events.sweep() == []  # its job is queued: nothing more to do


@pytest.fixture
def hooks_tls_test(settings, monkeypatch):
    """The name hooks.tls.test resolves to this machine, and the operator allows it."""
    settings.CALLBACK_ALLOWED_HOSTS = ["hooks.tls.test"]
    monkeypatch.setattr(targets, "_getaddrinfo", lambda host, port: [ipaddress.ip_address("127.0.0.1")])


def test_https_goes_to_the_checked_address_with_the_name_in_sni_and_the_certificate_check(
    alice, hooks_tls_test, monkeypatch, tmp_path
):
    tls, trusted = certificate_for("hooks.tls.test", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", trusted)
    with Receiver(tls=tls) as receiver:
        found = the_delivery_of(ended(submitted(alice, f"https://hooks.tls.test:{receiver.port}/hook")))
        delivery.deliver(found.pk)
    found.refresh_from_db()
    assert (found.status, found.last_status_code) == (DeliveryStatus.DELIVERED, 200)
    assert receiver.requests[0].headers["Host"] == f"hooks.tls.test:{receiver.port}"


def test_https_to_a_receiver_whose_certificate_is_for_another_name_is_not_sent(
    alice, hooks_tls_test, monkeypatch, tmp_path
):
    tls, trusted = certificate_for("someone-else.test", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", trusted)
    with Receiver(tls=tls) as receiver:
        found = the_delivery_of(ended(submitted(alice, f"https://hooks.tls.test:{receiver.port}/hook")))
        delivery.deliver(found.pk)
    found.refresh_from_db()
    assert (found.status, found.last_status_code) == (DeliveryStatus.PENDING, None)
    assert "certificate" in found.last_error.lower() or "hostname" in found.last_error.lower()
    assert receiver.requests == []


def test_https_to_a_receiver_with_an_untrusted_certificate_is_not_sent(alice, hooks_tls_test, tmp_path):
    tls, _not_trusted = certificate_for("hooks.tls.test", tmp_path)
    with Receiver(tls=tls) as receiver:
        found = the_delivery_of(ended(submitted(alice, f"https://hooks.tls.test:{receiver.port}/hook")))
        delivery.deliver(found.pk)
    found.refresh_from_db()
    assert found.status == DeliveryStatus.PENDING
    assert "certificate verify failed" in found.last_error
    assert receiver.requests == []


def test_when_the_first_checked_address_refuses_the_connection_the_next_checked_one_gets_it(
    alice, settings, monkeypatch
):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.0/8"]
    monkeypatch.setattr(
        targets, "_getaddrinfo", lambda host, port: [ipaddress.ip_address(a) for a in ("127.0.0.2", "127.0.0.1")]
    )
    with Receiver() as receiver:  # listens on 127.0.0.1 only
        found = the_delivery_of(ended(submitted(alice, f"http://hooks.two.test:{receiver.port}/hook")))
        delivery.deliver(found.pk)
    found.refresh_from_db()
    assert (found.status, found.attempt_log.get().address) == (DeliveryStatus.DELIVERED, "127.0.0.1")
    assert len(receiver.requests) == 1
