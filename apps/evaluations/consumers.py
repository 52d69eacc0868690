"""The live stream of one evaluation: ``WS /ws/evaluations/{id}/?after=N`` (see architecture.md).

On connect the consumer subscribes to the evaluation's group *first*, then reads the row and
replays stored chunks with ``seq > after`` from PostgreSQL. Channels dispatches one message at a
time, so events published while the replay runs wait in this connection's channel and are
handled afterwards; any log event with a ``seq`` already sent is dropped. That is the whole
no-gap/no-duplicate argument:

* no gap: the worker stores a chunk *before* publishing it. A chunk stored before we subscribed
  is in the replay; one stored after is published after we subscribed, so it reaches us live
  (and may be in the replay too — then the live copy is dropped).
* no duplicate: ``last_seq`` only grows, and every log message sent has ``seq == last_seq + 1``.

A live event can still go missing (publishing is best effort, a slow client's channel can fill
up). When a live log event skips ahead, the missing chunks are read from the database before it,
and before ``end`` every remaining stored chunk is sent, so the client never sees a hole.

Permission is checked on connect and again on later events (see ``PERMISSION_RECHECK_S``): a
revoked token, a deactivated user, a signed-out session or a lost right to see the evaluation
closes the connection.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.evaluations import publisher
from apps.evaluations.models import Evaluation, OutputChunk
from crucible.ws_auth import still_signed_in

CLOSE_NORMAL = 1000
CLOSE_BAD_REQUEST = 4400  # malformed ?after= (not in the contract's list: a client bug, not a permission)
CLOSE_NOT_SIGNED_IN = 4401
CLOSE_NOT_ALLOWED = 4403
CLOSE_NOT_FOUND = 4404

REPLAY_BATCH = 500
# Log events can arrive dozens of times a second per connection, and every database call from a
# consumer goes through Channels' single database thread; re-reading the user, token and row for
# each one would make one busy stream slow every other connection. Status, alert and end events
# are always re-checked; log and sample events at most once per this many seconds.
PERMISSION_RECHECK_S = 1.0


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError):
        return None


def _parse_after(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return 0
    raw = values[-1]
    if not raw.isdigit() or len(raw) > 12:
        return None
    return int(raw)


class EvaluationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.group = None
        self.evaluation_id = None
        self.last_seq = 0
        self.finished = False
        self._checked_at = 0.0
        # Accept before any refusal so the client receives the close code; a close before accept
        # reaches it only as a bare HTTP 403 during the handshake.
        await self.accept()

        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._finish(CLOSE_NOT_SIGNED_IN)
        evaluation_id = _parse_uuid(self.scope["url_route"]["kwargs"].get("evaluation_id"))
        if evaluation_id is None:
            return await self._finish(CLOSE_NOT_FOUND)
        after = _parse_after(self.scope.get("query_string", b""))
        if after is None:
            return await self._finish(CLOSE_BAD_REQUEST)
        self.evaluation_id = evaluation_id
        denied = await self._access_denied()
        if denied:
            # Another researcher's evaluation is "no such evaluation": an outsider learns nothing.
            return await self._finish(denied)
        self._checked_at = time.monotonic()

        # Subscribe first, then read: see the module docstring.
        self.group = publisher.group_name(evaluation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        evaluation = await self._load()
        if evaluation is None:  # deleted in between
            return await self._finish(CLOSE_NOT_FOUND)
        await self.send_json({"type": "status", "status": evaluation.status})
        self.last_seq = after
        await self._replay()
        if evaluation.is_terminal:
            # Terminal was read before the replay, so every chunk was stored and has been sent.
            await self.send_json({"type": "end", "status": evaluation.status, "exit_code": evaluation.exit_code})
            await self._finish(CLOSE_NORMAL)

    async def disconnect(self, code):
        self.finished = True
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def receive_json(self, content, **kwargs):
        """Clients have nothing to say; messages are ignored."""

    async def evaluation_event(self, message):
        """An event from the publisher; ``message["event"]`` is exactly the client message."""
        if self.finished:
            return
        event = message["event"]
        kind = event.get("type")
        # Frequent events (log chunks, resource samples) are re-checked at most once a second.
        if not await self._still_allowed(always=kind not in ("log", "sample")):
            return
        if kind == "log":
            seq = event["seq"]
            if seq <= self.last_seq:
                return  # already sent by the replay (or a duplicate publish)
            if seq > self.last_seq + 1:
                await self._replay(before=seq)  # the events in between were lost: read them
            await self.send_json(event)
            self.last_seq = seq
        elif kind == "end":
            await self._replay()  # the worker stored everything before publishing the end
            await self.send_json(event)
            await self._finish(CLOSE_NORMAL)
        elif kind == "status":
            # Chunks stored before a status change come before it, even if their events were lost.
            await self._replay()
            await self.send_json(event)
        else:
            await self.send_json(event)

    # --- helpers ---------------------------------------------------------------------------

    async def _finish(self, code: int) -> None:
        self.finished = True
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        await self.close(code)

    async def _replay(self, before: int | None = None) -> None:
        """Send stored chunks with last_seq < seq (< before), in order, in batches."""
        while not self.finished:
            batch = await self._chunks(self.last_seq, before)
            for seq, stream, text in batch:
                await self.send_json({"type": "log", "seq": seq, "stream": stream, "data": text})
                self.last_seq = seq
            if len(batch) < REPLAY_BATCH:
                return

    @database_sync_to_async
    def _chunks(self, after: int, before: int | None) -> list[tuple[int, str, str]]:
        chunks = OutputChunk.objects.filter(evaluation_id=self.evaluation_id, seq__gt=after)
        if before is not None:
            chunks = chunks.filter(seq__lt=before)
        chunks = chunks.order_by("seq").only("seq", "stream", "data")[:REPLAY_BATCH]
        return [(c.seq, c.stream, c.text) for c in chunks]

    @database_sync_to_async
    def _load(self) -> Evaluation | None:
        return Evaluation.objects.only("id", "status", "exit_code").filter(pk=self.evaluation_id).first()

    async def _still_allowed(self, *, always: bool) -> bool:
        now = time.monotonic()
        if not always and now - self._checked_at < PERMISSION_RECHECK_S:
            return True
        denied = await self._access_denied()
        self._checked_at = now
        if denied:
            # The client saw this evaluation before, so a lost right is "not allowed", not "no such".
            await self._finish(CLOSE_NOT_ALLOWED if denied == CLOSE_NOT_FOUND else denied)
            return False
        return True

    @database_sync_to_async
    def _access_denied(self) -> int:
        """0 when the connection may see the evaluation now, else the close code."""
        user = still_signed_in(self.scope)
        if user is None:
            return CLOSE_NOT_SIGNED_IN
        if not Evaluation.objects.visible_to(user).filter(pk=self.evaluation_id).exists():
            return CLOSE_NOT_FOUND
        return 0
