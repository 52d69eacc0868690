"""Live safety alerts for operators: ``WS /ws/alerts/``.

On connect the consumer sends ``{"type":"alerts","unacknowledged":N}``; then every alert any
evaluation raises arrives as ``{"type":"alert", ...}`` (the alert's own fields: ``id``, ``rule``,
``severity``, ``message``, ``evidence``, ``evaluation_id``, ``created_at`` …) with the new
``unacknowledged`` count. ``evidence`` is sandbox output: clients must treat it as text.

Operators only (``apps.accounts.permissions.is_operator``): anonymous closes 4401, anyone else 4403.
Operator status (and the token or session) is re-checked on alerts, at most once per ``recheck_s``
(``crucible.ws_auth.GuardedConsumer``): a connection whose user is no longer an operator is closed
with 4403, one whose session or token is gone with 4401 (as the evaluation stream does).
"""

from __future__ import annotations

from apps.accounts.permissions import is_operator
from apps.evaluations import publisher
from apps.monitoring.models import Alert
from crucible.ws_auth import CloseCode, GuardedConsumer
from crucible.ws_db import pooled_db


class OperatorAlertsConsumer(GuardedConsumer):
    async def connect(self):
        if not await self.open() or not await self.admit():
            return
        # Subscribe before counting, so an alert raised in between is at worst counted twice over
        # (the count it carries is read afresh), never missed.
        await self.subscribe(publisher.OPERATORS_GROUP)
        await self.send_json(publisher.alert_count_message(await self._unacknowledged()))

    def denies(self, user) -> CloseCode | None:
        return None if is_operator(user) else CloseCode.NOT_ALLOWED

    async def operator_alert(self, message: publisher.OperatorAlertEvent):
        """An alert from ``publisher.publish_alert``."""
        if self.finished or not await self.still_allowed(always=False):
            return
        await self.send_json(publisher.operator_alert_message(message["alert"], await self._unacknowledged()))

    @pooled_db
    def _unacknowledged(self) -> int:
        return Alert.objects.unacknowledged().count()
