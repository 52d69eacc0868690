"""Schedule, send and retry callbacks: generic, for any event of any app at or above evaluations.

``schedule(owner, url, event_type, subject_id, payload)`` records one ``CallbackDelivery`` per
(event, subject), exactly once however often it is called, and enqueues its first attempt when the
transaction commits. Each attempt is an RQ job (``deliver``) on the least urgent queue, so runs go
first, and a job's timeout bounds it. An attempt checks the URL again (``targets.check``: resolve
once, refuse non-public addresses the operator did not allow), signs the stored body with the
owner's webhook secret as it is now, POSTs it to the checked address and records the answer in a
``CallbackAttempt``. A 2xx ends it ``delivered``; anything else waits ``CALLBACK_RETRY_BASE_S``,
then twice that … and ends ``failed`` after ``CALLBACK_MAX_ATTEMPTS``. The reconciler calls
``sweep`` to re-enqueue an attempt whose job was lost (Redis flushed, a worker died mid-attempt).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rq.job import Job, JobStatus

from apps.accounts.services import webhook_secret_of
from apps.evaluations.callbacks import targets, transport
from apps.evaluations.callbacks.signing import SIGNATURE_HEADER, sign
from apps.evaluations.models import CallbackAttempt, CallbackDelivery, DeliveryStatus

log = logging.getLogger(__name__)

JOB = "apps.evaluations.jobs.deliver_callback"
EVENT_HEADER = "X-Crucible-Event"
DELIVERY_HEADER = "X-Crucible-Delivery"
ATTEMPT_HEADER = "X-Crucible-Attempt"
MAX_DELAY_S = 3600
# An attempt's job may start this much before its time (clocks of hosts differ a little).
CLOCK_SLACK_S = 5
# An attempt overdue by this much has lost its job: the sweep enqueues it again.
SWEEP_GRACE_S = 60
SWEEP_BATCH = 500
LIVE_JOB_STATUSES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def delivery_queue() -> str:
    """Callbacks go on the least urgent queue (``RQ_QUEUES`` lists them most urgent first): a run never
    waits behind a delivery of higher priority, and every worker serves it."""
    return list(settings.RQ_QUEUES)[-1]


def job_timeout_s() -> int:
    """Long enough for an attempt to try connecting to each address it may and read the answer's head."""
    return int(settings.CALLBACK_TIMEOUT_S * (transport.MAX_ADDRESSES_TRIED + 3)) + 30


def encode(payload) -> str:
    """The body, as sent and signed: compact JSON, ASCII only (dates and ids as the API writes them)."""
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))


def retry_delay_s(attempt: int) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, …): base, twice base, four times …, at most an hour."""
    return min(settings.CALLBACK_RETRY_BASE_S * 2 ** (attempt - 1), MAX_DELAY_S)


# --- scheduling -----------------------------------------------------------------------------------


def schedule(owner, url: str, event_type: str, subject_id, payload) -> CallbackDelivery:
    """Record that ``payload`` (the event ``event_type`` of ``subject_id``) goes to ``url`` for ``owner``
    (a user or a user id), once: a second call for the same event and subject returns the first
    delivery. Its first attempt is enqueued when the current transaction commits."""
    owner_id = getattr(owner, "pk", owner)
    try:
        with transaction.atomic():
            delivery = CallbackDelivery.objects.create(
                owner_id=owner_id,
                event_type=event_type,
                subject_id=str(subject_id),
                url=url,
                body=encode(payload),
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:
        return CallbackDelivery.objects.get(event_type=event_type, subject_id=str(subject_id))
    transaction.on_commit(lambda: enqueue(delivery.pk, 1))
    return delivery


def job_id(delivery_id, attempt: int) -> str:
    return f"callback-{delivery_id}-{attempt}"


def enqueue(delivery_id, attempt: int, at: datetime | None = None) -> None:
    """Put attempt ``attempt`` on the queue, now or at ``at`` (RQ's scheduler, which every
    ``crucible_worker`` runs). Never raises: a job that could not be queued is found by ``sweep``."""
    try:
        queue = django_rq.get_queue(delivery_queue())
        options = dict(
            job_id=job_id(delivery_id, attempt), job_timeout=job_timeout_s(), result_ttl=600, failure_ttl=86400
        )
        if at is not None:
            queue.enqueue_at(at, JOB, str(delivery_id), **options)
        else:
            queue.enqueue(JOB, str(delivery_id), **options)
    except Exception:
        log.warning("could not queue attempt %d of callback %s; the sweep will", attempt, delivery_id, exc_info=True)


# --- one attempt ----------------------------------------------------------------------------------


def deliver(delivery_id) -> str:
    """Make the attempt that is due for ``delivery_id``, if any; returns what was done (for RQ's result)."""
    delivery = CallbackDelivery.objects.select_related("owner").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return "nothing to do"
    number = delivery.attempts + 1
    if not _claim(delivery):
        return "not due, or another job has it"
    started, clock = timezone.now(), time.monotonic()
    answer = _send(delivery, number)
    _record(delivery, number, answer, started, int((time.monotonic() - clock) * 1000))
    return f"attempt {number}: {answer.status_code or answer.error}"


def _claim(delivery: CallbackDelivery) -> bool:
    """Take the due attempt for this job (a conditional UPDATE on ``attempts``); its lease ends when the
    job's timeout would have, after which ``sweep`` may hand the next attempt to another job."""
    now = timezone.now()
    lease = now + timedelta(seconds=job_timeout_s() + SWEEP_GRACE_S)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + timedelta(seconds=CLOCK_SLACK_S))
    claimed = (
        CallbackDelivery.objects.filter(
            due, pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
        ).update(attempts=delivery.attempts + 1, next_attempt_at=lease)
        == 1
    )
    return claimed


def headers_for(delivery: CallbackDelivery, number: int, body: bytes) -> dict[str, str]:
    """The request's headers: JSON, the signature with the owner's secret as it is now, the event, the
    delivery id (the same for every attempt: receivers drop duplicates by it) and the attempt number."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, webhook_secret_of(delivery.owner)),
        EVENT_HEADER: delivery.event_type,
        DELIVERY_HEADER: str(delivery.pk),
        ATTEMPT_HEADER: str(number),
    }


def _send(delivery: CallbackDelivery, number: int) -> transport.Answer:
    try:
        target = targets.check(delivery.url)
    except targets.CallbackUrlRefused as exc:
        return transport.Answer(error=f"not sent: {exc.message}")
    body = delivery.body.encode()
    return transport.post(target, body, headers_for(delivery, number, body))


def _record(delivery: CallbackDelivery, number: int, answer: transport.Answer, started, duration_ms: int) -> None:
    """Store the attempt and what follows from it (delivered, failed, or the next attempt's time)."""
    now = timezone.now()
    fields = {"last_status_code": answer.status_code, "last_error": answer.error[:500]}
    retry_at = None
    if answer.delivered:
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None, last_error="")
    elif number >= settings.CALLBACK_MAX_ATTEMPTS:
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        retry_at = now + timedelta(seconds=retry_delay_s(number))
        fields.update(next_attempt_at=retry_at)
    if not answer.delivered and not answer.error:
        fields["last_error"] = f"answered HTTP {answer.status_code}"
    with transaction.atomic():
        CallbackAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started,
            duration_ms=duration_ms,
            address=answer.address[:64],
            status_code=answer.status_code,
            error=fields["last_error"],
        )
        CallbackDelivery.objects.filter(pk=delivery.pk, attempts=number, status=DeliveryStatus.PENDING).update(**fields)
        if retry_at is not None:
            transaction.on_commit(lambda: enqueue(delivery.pk, number + 1, retry_at))
    log.info("callback %s (%s) attempt %d: %s", delivery.pk, delivery.event_type, number, fields["last_error"] or "ok")


# --- repair ---------------------------------------------------------------------------------------


def sweep() -> list[str]:
    """Enqueue again the attempts overdue by ``SWEEP_GRACE_S`` that have no live job; returns their ids."""
    cutoff = timezone.now() - timedelta(seconds=SWEEP_GRACE_S)
    overdue = CallbackDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=cutoff).values_list(
        "pk", "attempts"
    )[:SWEEP_BATCH]
    enqueued = []
    for pk, attempts in overdue:
        if not _has_live_job(pk, attempts + 1):
            enqueue(pk, attempts + 1)
            enqueued.append(str(pk))
    return enqueued


def _has_live_job(delivery_id, attempt: int) -> bool:
    try:
        job = Job.fetch(job_id(delivery_id, attempt), connection=django_rq.get_connection(delivery_queue()))
    except Exception:
        return False
    return job.get_status(refresh=False) in LIVE_JOB_STATUSES
