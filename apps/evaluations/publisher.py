"""The only code that talks to the channel layer. Typed payloads, one group per evaluation.

Messages sent to the group carry ``type: "evaluation.event"`` and an ``event`` dict that is
exactly what the WebSocket consumer forwards to clients (see the contract in architecture.md).

Alerts also go to one group for all operators (``OPERATORS_GROUP``, ``WS /ws/alerts/``), as
``type: "operator.alert"`` with the alert (evaluation id included) in ``alert``.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

OPERATORS_GROUP = "operators.alerts"


def group_name(evaluation_id) -> str:
    return f"evaluation.{evaluation_id}"


def _send(evaluation_id, event: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(evaluation_id), {"type": "evaluation.event", "event": event})
    except Exception:
        # Live delivery is best effort: the row and chunks in PostgreSQL are the record, and a
        # client that reconnects replays from them. Never fail a run because Redis hiccupped.
        log.warning("could not publish %s for %s", event.get("type"), evaluation_id, exc_info=True)


def publish_status(evaluation) -> None:
    _send(evaluation.pk, {"type": "status", "status": evaluation.status})


def publish_log(evaluation_id, seq: int, stream: str, text: str) -> None:
    _send(evaluation_id, {"type": "log", "seq": seq, "stream": stream, "data": text})


def publish_end(evaluation) -> None:
    _send(evaluation.pk, {"type": "status", "status": evaluation.status})
    _send(evaluation.pk, {"type": "end", "status": evaluation.status, "exit_code": evaluation.exit_code})


def publish_alert(evaluation_id, alert: dict) -> None:
    _send(evaluation_id, {"type": "alert", **alert})
    message = {"type": "operator.alert", "alert": {**alert, "evaluation_id": str(evaluation_id)}}
    # The operators' consumer sends the unacknowledged count with each alert, read from the
    # database: publish once the alert row is committed (at once outside a transaction).
    transaction.on_commit(lambda: _send_operators(message))


def _send_operators(message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(OPERATORS_GROUP, message)
    except Exception:
        log.warning("could not publish an alert to operators", exc_info=True)


def publish_sample(evaluation_id, sample: dict) -> None:
    """A resource sample (``at``, ``cpu_percent``, ``memory_bytes``, ``pids``, ``output_bytes_per_s``)."""
    _send(evaluation_id, {"type": "sample", **sample})
