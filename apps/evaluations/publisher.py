"""The only code that talks to the channel layer, and the one place WebSocket messages are built.

Every message a client receives is one of the ``TypedDict``s below, made by its builder; the
consumers use the same builders for what they send themselves (replayed chunks, the final ``end``,
the operators' alert count), so a message has one shape wherever it comes from.

Messages sent to an evaluation's group carry ``type: "evaluation.event"`` and an ``event`` that is
exactly what the consumer forwards to clients (see the contract in architecture.md). One message
goes to the group and never to clients: ``type: "evaluation.stored"`` with ``seq``, sent by the
recorder after each stored batch of output (chunks are published before they are stored; a viewer
waiting for chunks it missed reads them from the database then). Alerts also go
to one group for all operators (``OPERATORS_GROUP``, ``WS /ws/alerts/``), as
``type: "operator.alert"`` with the alert (evaluation id included) in ``alert``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Literal, NotRequired, TypedDict

from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from apps.evaluations import signals
from apps.evaluations.callbacks import events
from apps.monitoring.alerts import OPERATORS_ALERTS_GROUP
from apps.monitoring.models import AlertPayload, SamplePayload
from crucible import publishing

log = logging.getLogger(__name__)

OPERATORS_GROUP = OPERATORS_ALERTS_GROUP


# --- What clients receive --------------------------------------------------------------------


class StatusMessage(TypedDict):
    type: Literal["status"]
    status: str


class LogMessage(TypedDict):
    type: Literal["log"]
    seq: int
    stream: str
    data: str
    ts: str | None  # when the chunk was recorded (ISO 8601), as the logs API's ``ts``


class EndMessage(TypedDict):
    type: Literal["end"]
    status: str
    exit_code: int | None
    reason: str | None  # why it ended (contract v2 ``reason``)


class AlertMessage(AlertPayload):
    type: Literal["alert"]


class SampleMessage(SamplePayload):
    type: Literal["sample"]


class OperatorAlertMessage(AlertMessage):
    """An alert on the operators' stream, with the count of alerts nobody has acknowledged yet."""

    unacknowledged: int


class AlertCountMessage(TypedDict):
    """The first message on the operators' stream."""

    type: Literal["alerts"]
    unacknowledged: int


EvaluationMessage = StatusMessage | LogMessage | EndMessage | AlertMessage | SampleMessage


def status_message(status: str) -> StatusMessage:
    return {"type": "status", "status": status}


def log_message(seq: int, stream: str, text: str, ts: datetime | None = None) -> LogMessage:
    return {"type": "log", "seq": seq, "stream": stream, "data": text, "ts": ts.isoformat() if ts else None}


def end_message(evaluation) -> EndMessage:
    """The last message of a stream: the terminal status, exit code and reason of ``evaluation``."""
    return {
        "type": "end",
        "status": evaluation.status,
        "exit_code": evaluation.exit_code,
        "reason": evaluation.reason or None,
    }


def alert_message(alert: AlertPayload) -> AlertMessage:
    return {"type": "alert", **alert}


def sample_message(sample: SamplePayload) -> SampleMessage:
    return {"type": "sample", **sample}


def operator_alert_message(alert: AlertPayload, unacknowledged: int) -> OperatorAlertMessage:
    return {**alert_message(alert), "unacknowledged": unacknowledged}


def alert_count_message(unacknowledged: int) -> AlertCountMessage:
    return {"type": "alerts", "unacknowledged": unacknowledged}


# --- What goes through the channel layer -------------------------------------------------------


class EvaluationEvent(TypedDict):
    """To an evaluation's group; handled by ``EvaluationConsumer.evaluation_event``. ``id`` names this
    publication: the viewers of one Daphne process that must re-check something after an event (their
    permission, how far the output is stored) ask once per event and share the fresh answer."""

    type: Literal["evaluation.event"]
    event: EvaluationMessage
    id: str
    # The worker's end says how far the output is stored (every chunk, then): the viewers that have
    # sent that far need not ask the database. Absent: ask.
    stored_seq: NotRequired[int]


class StoredEvent(TypedDict):
    """To an evaluation's group; handled by ``EvaluationConsumer.evaluation_stored``: every chunk up
    to ``seq`` is stored now."""

    type: Literal["evaluation.stored"]
    seq: int


class OperatorAlertEvent(TypedDict):
    """To the operators' group; handled by ``OperatorAlertsConsumer.operator_alert``."""

    type: Literal["operator.alert"]
    alert: AlertPayload


def group_name(evaluation_id) -> str:
    return f"evaluation.{evaluation_id}"


def _group_send(group: str, message: EvaluationEvent | StoredEvent | OperatorAlertEvent, what: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        publishing.group_send(layer, group, message)
    except Exception:
        # Live delivery is best effort: the row and chunks in PostgreSQL are the record, and a
        # client that reconnects replays from them. Never fail a run because Redis hiccupped.
        log.warning("could not publish %s to %s", what, group, exc_info=True)


def _send(evaluation_id, event: EvaluationMessage, event_id: str | None = None, stored_seq: int | None = None) -> None:
    message: EvaluationEvent = {"type": "evaluation.event", "event": event, "id": event_id or uuid.uuid4().hex}
    if stored_seq is not None:
        message["stored_seq"] = stored_seq
    _group_send(group_name(evaluation_id), message, event["type"])


def publish_status(evaluation) -> None:
    _send(evaluation.pk, status_message(evaluation.status))


def publish_log(evaluation_id, seq: int, stream: str, text: str, ts: datetime | None = None) -> None:
    """A chunk to the viewers as it is written; ``ts`` (default now) is when, as the stored ``created_at``."""
    _send(evaluation_id, log_message(seq, stream, text, ts or timezone.now()))


def publish_stored(evaluation_id, seq: int) -> None:
    """Tell the viewers that every chunk up to ``seq`` is in the database (nothing reaches clients)."""
    stored: StoredEvent = {"type": "evaluation.stored", "seq": seq}
    _group_send(group_name(evaluation_id), stored, "a stored mark")


def publish_end(evaluation, stored_seq: int | None = None) -> None:
    """The final status to the viewers. Every terminal path (worker, retries, cancel and stop of a queued
    run) ends here, so this is also where the owner's ``evaluation.finished`` callback is scheduled
    (once per evaluation, whatever calls this how often; nothing without a ``callback_url``).

    The status and the end are one publication (one id: a viewer's permission is re-checked once for
    both); ``stored_seq``, when the caller knows it, is the last chunk stored (the whole output)."""
    event_id = uuid.uuid4().hex
    _send(evaluation.pk, status_message(evaluation.status), event_id, stored_seq)
    _send(evaluation.pk, end_message(evaluation), event_id, stored_seq)
    events.evaluation_finished(evaluation)
    for receiver, response in signals.evaluation_ended.send_robust(sender=type(evaluation), evaluation=evaluation):
        if isinstance(response, Exception):
            log.warning("evaluation %s: %r failed on its end: %r", evaluation.pk, receiver, response)


def publish_alert(evaluation_id, alert: AlertPayload) -> None:
    _send(evaluation_id, alert_message(alert))
    message: OperatorAlertEvent = {"type": "operator.alert", "alert": {**alert, "evaluation_id": str(evaluation_id)}}
    # The operators' consumer sends the unacknowledged count with each alert, read from the
    # database: publish once the alert row is committed (at once outside a transaction).
    transaction.on_commit(lambda: _group_send(OPERATORS_GROUP, message, "an alert"))


def publish_sample(evaluation_id, sample: SamplePayload) -> None:
    _send(evaluation_id, sample_message(sample))
