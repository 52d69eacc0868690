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
and before ``end`` every remaining stored chunk is sent, so the client never sees a hole. Every
heartbeat (``WEBSOCKET_HEARTBEAT_S``) sends the chunks stored since, and the ``end`` once the row is
terminal, so even a lost ``end`` arrives a heartbeat late rather than never.

Permission is checked on connect and again on later events (``crucible.ws_auth.GuardedConsumer``):
a revoked token, a deactivated user, a signed-out session or a lost right to see the evaluation
closes the connection. Status, alert and end events are always re-checked; log and sample events
at most once per ``recheck_s``.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from apps.evaluations import publisher
from apps.evaluations.models import Evaluation, OutputChunk
from crucible.ws_auth import CloseCode, GuardedConsumer

REPLAY_BATCH = 500
FREQUENT_EVENTS = ("log", "sample")


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
    # ASCII digits only: str.isdigit() also accepts "²" and "①", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        return None
    return int(raw)


class EvaluationConsumer(GuardedConsumer):
    evaluation_id: uuid.UUID | None = None
    last_seq = 0

    async def connect(self):
        if not await self.open():
            return
        evaluation_id = _parse_uuid(self.scope["url_route"]["kwargs"].get("evaluation_id"))
        if evaluation_id is None:
            return await self.finish(CloseCode.NOT_FOUND)
        after = _parse_after(self.scope.get("query_string", b""))
        if after is None:
            return await self.finish(CloseCode.BAD_REQUEST)
        self.evaluation_id = evaluation_id
        # Another researcher's evaluation is "no such evaluation": an outsider learns nothing.
        if not await self.admit():
            return

        # Subscribe first, then read: see the module docstring.
        await self.subscribe(publisher.group_name(evaluation_id))
        evaluation = await self._load()
        if evaluation is None:  # deleted in between
            return await self.finish(CloseCode.NOT_FOUND)
        await self.send_json(publisher.status_message(evaluation.status))
        self.last_seq = after
        await self._replay()
        if evaluation.is_terminal:
            # Terminal was read before the replay, so every chunk was stored and has been sent.
            await self.send_json(publisher.end_message(evaluation))
            await self.finish(CloseCode.NORMAL)

    async def heartbeat(self) -> None:
        """Catch up with events the channel layer may have dropped (it drops when a process's queue
        is full or a message is too old): the stored chunks, and the end once the row is terminal."""
        if not await self.still_allowed(always=False):
            return
        evaluation = await self._load()
        if evaluation is None:
            return await self.finish(CloseCode.NOT_ALLOWED)
        await self._replay()
        if evaluation.is_terminal:  # read before the replay, so every chunk was stored and sent
            await self.send_json(publisher.end_message(evaluation))
            await self.finish(CloseCode.NORMAL)

    def denies(self, user) -> CloseCode | None:
        if not Evaluation.objects.visible_to(user).filter(pk=self.evaluation_id).exists():
            return CloseCode.NOT_FOUND
        return None

    async def evaluation_event(self, message: publisher.EvaluationEvent):
        """An event from the publisher; ``message["event"]`` is exactly the client message."""
        if self.finished:
            return
        event = message["event"]
        kind = event["type"]
        if not await self.still_allowed(always=kind not in FREQUENT_EVENTS):
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
            await self.finish(CloseCode.NORMAL)
        elif kind == "status":
            # Chunks stored before a status change come before it, even if their events were lost.
            await self._replay()
            await self.send_json(event)
        else:
            await self.send_json(event)

    # --- helpers ---------------------------------------------------------------------------

    async def _replay(self, before: int | None = None) -> None:
        """Send stored chunks with last_seq < seq (< before), in order, in batches."""
        while not self.finished:
            batch = await self._chunks(self.last_seq, before)
            for seq, stream, text in batch:
                await self.send_json(publisher.log_message(seq, stream, text))
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
        return Evaluation.objects.only("id", "status", "exit_code", "reason").filter(pk=self.evaluation_id).first()
