"""Live safety alerts for operators: ``WS /ws/alerts/``.

On connect the consumer sends ``{"type":"alerts","unacknowledged":N}``; then every alert any
evaluation raises arrives as ``{"type":"alert", ...}`` (the alert's own fields: ``id``, ``rule``,
``severity``, ``message``, ``evidence``, ``evaluation_id``, ``created_at`` …) with the new
``unacknowledged`` count. ``evidence`` is sandbox output: clients must treat it as text.

Operators only (``apps.accounts.roles.is_operator``): anonymous closes 4401, anyone else 4403.
The connection is accepted before a refusal so the client receives the code. Operator status
(and the token or session) is re-checked on events, at most once per ``PERMISSION_RECHECK_S``;
a connection whose user is no longer an operator is closed with 4403, one whose session or token
is gone with 4401 (as the evaluation stream does).
"""

from __future__ import annotations

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.evaluations import publisher
from crucible.ws_auth import still_signed_in

CLOSE_NOT_SIGNED_IN = 4401
CLOSE_NOT_ALLOWED = 4403

PERMISSION_RECHECK_S = 1.0


class OperatorAlertsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.subscribed = False
        self.finished = False
        self._checked_at = 0.0
        await self.accept()

        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._finish(CLOSE_NOT_SIGNED_IN)
        denied = await self._access_denied()
        if denied:
            return await self._finish(denied)
        self._checked_at = time.monotonic()
        # Subscribe before counting, so an alert raised in between is at worst counted twice over
        # (the count it carries is read afresh), never missed.
        await self.channel_layer.group_add(publisher.OPERATORS_GROUP, self.channel_name)
        self.subscribed = True
        await self.send_json({"type": "alerts", "unacknowledged": await self._unacknowledged()})

    async def disconnect(self, code):
        self.finished = True
        await self._unsubscribe()

    async def receive_json(self, content, **kwargs):
        """Clients have nothing to say; messages are ignored."""

    async def operator_alert(self, message):
        """An alert from ``publisher.publish_alert``."""
        if self.finished:
            return
        now = time.monotonic()
        if now - self._checked_at >= PERMISSION_RECHECK_S:
            denied = await self._access_denied()
            self._checked_at = now
            if denied:
                # 4403 for a lost operator role, 4401 for a signed-out session or revoked token.
                return await self._finish(denied)
        alert = dict(message.get("alert") or {})
        alert["type"] = "alert"
        alert["unacknowledged"] = await self._unacknowledged()
        await self.send_json(alert)

    # --- helpers ---------------------------------------------------------------------------

    async def _unsubscribe(self) -> None:
        if self.subscribed:
            self.subscribed = False
            await self.channel_layer.group_discard(publisher.OPERATORS_GROUP, self.channel_name)

    async def _finish(self, code: int) -> None:
        self.finished = True
        await self._unsubscribe()
        await self.close(code)

    @database_sync_to_async
    def _unacknowledged(self) -> int:
        from apps.monitoring.models import Alert

        return Alert.objects.unacknowledged().count()

    @database_sync_to_async
    def _access_denied(self) -> int:
        """0 while the connection belongs to an operator, else the close code."""
        from apps.accounts.roles import is_operator

        user = still_signed_in(self.scope)
        if user is None:
            return CLOSE_NOT_SIGNED_IN
        if not is_operator(user):
            return CLOSE_NOT_ALLOWED
        return 0
