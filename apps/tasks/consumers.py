"""A batch's live progress: ``WS /ws/batches/{id}/`` (contract v2).

On connect: ``{"type":"progress", "status", "counts", "passed", "total", "ended", "pass_at_k"}``
with where the batch stands; then one such message as each sample ends (``progress.publish``),
and ``{"type":"end", …}`` (the same fields) once the batch is completed or cancelled, after which
the connection closes normally. Every heartbeat sends the progress read afresh, so a lost event
costs a heartbeat, never the end. Only the owner and operators (else 4404, as for a batch that
does not exist); access is re-checked as on the evaluation stream (``GuardedConsumer``).
"""

from __future__ import annotations

import uuid

from apps.tasks import progress
from apps.tasks.models import Batch
from crucible.ws_auth import CloseCode, GuardedConsumer
from crucible.ws_db import pooled_db


class BatchConsumer(GuardedConsumer):
    batch_id: uuid.UUID | None = None

    async def connect(self):
        try:
            self.batch_id = uuid.UUID(self.scope["url_route"]["kwargs"]["batch_id"])
        except (KeyError, ValueError):
            self.batch_id = None
        if not await self.open() or not await self.admit():
            return
        await self.subscribe(progress.group_name(self.batch_id))
        await self.send_progress()

    def denies(self, user) -> CloseCode | None:
        if self.batch_id is None or not Batch.objects.visible_to(user).filter(pk=self.batch_id).exists():
            return CloseCode.NOT_FOUND
        return None

    async def batch_event(self, message):
        """Progress from ``progress.publish``."""
        if self.finished or not await self.still_allowed(always=message["event"]["type"] == "end"):
            return
        await self.send_json(message["event"])
        if message["event"]["type"] == "end":
            await self.finish(CloseCode.NORMAL)

    async def heartbeat(self) -> None:
        if not self.finished and await self.still_allowed(always=False):
            await self.send_progress()

    async def send_progress(self) -> None:
        message = await self._message()
        if message is None or self.finished:
            return
        await self.send_json(message)
        if message["type"] == "end":
            await self.finish(CloseCode.NORMAL)

    @pooled_db
    def _message(self) -> dict | None:
        batch = Batch.objects.filter(pk=self.batch_id).first()
        return None if batch is None else progress.progress_message(batch)
