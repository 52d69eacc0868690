"""The only code of the sessions app that talks to the channel layer, and where its messages are built.

A session's group (``group_name``) gets ``type: "session.event"`` messages whose ``event`` is
exactly what ``SessionConsumer`` forwards to clients: ``step`` (when a step starts, and again when
it is done), ``status`` and ``end`` (architecture.md, Sessions). Live delivery is best effort: the
rows are the record, and a viewer that reconnects replays from them.
"""

from __future__ import annotations

import logging
from typing import Literal, TypedDict

from channels.layers import get_channel_layer

from apps.monitoring.alerts import OPERATORS_ALERTS_GROUP
from apps.monitoring.models import AlertPayload
from apps.sessions.transcript import step_json
from crucible import publishing

log = logging.getLogger(__name__)


class StepMessage(TypedDict):
    type: Literal["step"]
    step: dict


class StatusMessage(TypedDict):
    type: Literal["status"]
    status: str


class EndMessage(TypedDict):
    type: Literal["end"]
    status: str
    end_reason: str | None
    error: str


class AlertMessage(AlertPayload):
    type: Literal["alert"]


SessionMessage = StepMessage | StatusMessage | EndMessage | AlertMessage


def group_name(session_id) -> str:
    return f"session.{session_id}"


def step_message(step) -> StepMessage:
    return {"type": "step", "step": step_json(step)}


def status_message(status: str) -> StatusMessage:
    return {"type": "status", "status": status}


def end_message(session) -> EndMessage:
    return {"type": "end", "status": session.status, "end_reason": session.end_reason or None, "error": session.error}


def _group_send(group: str, message: dict, what: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        publishing.group_send(layer, group, message)
    except Exception:
        log.warning("could not publish %s to %s", what, group, exc_info=True)


def _send(session_id, event: SessionMessage) -> None:
    _group_send(group_name(session_id), {"type": "session.event", "event": event}, event["type"])


def publish_alert(session_id, alert: AlertPayload) -> None:
    """To the session's viewers and to every operator's alert feed (the alert row is committed)."""
    _send(session_id, {"type": "alert", **alert})
    _group_send(OPERATORS_ALERTS_GROUP, {"type": "operator.alert", "alert": alert}, "an alert")


def publish_step(step) -> None:
    _send(step.session_id, step_message(step))


def publish_status(session) -> None:
    _send(session.pk, status_message(session.status))


def publish_end(session) -> None:
    _send(session.pk, end_message(session))
