"""The live stream of one evaluation: ``WS /ws/evaluations/{id}/?after=N`` (see architecture.md).

The worker publishes each chunk of output as soon as it has it and stores chunks in batches a
little later (recording.py); after each stored batch it publishes a *stored mark* (the highest
``seq`` stored). On connect the consumer subscribes to the evaluation's group *first*, then reads
the row and replays stored chunks with ``seq > after`` from PostgreSQL. Channels dispatches one
message at a time, so events published while the replay runs wait in this connection's channel
and are handled afterwards. The consumer sends a log message only when its ``seq`` is
``last_seq + 1``; a live chunk further ahead is *held* until the chunks before it are read from the
database. That is the whole no-gap/no-duplicate argument:

* no duplicate: ``last_seq`` only grows, and every log message sent has ``seq == last_seq + 1``.
* no gap: a chunk published after we subscribed reaches us live. A chunk published before we
  subscribed was either stored before our read (it is in the replay) or stored after it; then the
  stored mark of its batch is published after our read, so after we subscribed, and reaches us:
  on a mark ahead of ``last_seq`` the consumer reads the database and releases what it held.

Only the next ``seq`` is sent straight from a live event; the stored copy of a chunk is the same
bytes under the same ``seq``, so whichever comes first is the one the client sees.

Under Daphne, that next live chunk does not even wait for this connection's turn: the channel layer
offers each group message to ``_take_directly`` before queueing it (``crucible.channel_layer``), and
when this connection's queue is empty, no handler runs and the permission check is fresh, the chunk
is written to the socket at once, encoded and framed once for all viewers of the process
(``crucible.ws_direct``). Everything else is queued and handled as above, so the argument holds:
a direct write is exactly the handler's ``seq == last_seq + 1`` case, made when nothing is ahead of it.

A live event can still go missing (publishing is best effort; with the pub/sub channel layer,
``CHANNEL_LAYER=pubsub``, an event published before Redis has read this process's SUBSCRIBE for the
group is not delivered to it; with the core layer a full channel drops). When a live log event
skips ahead, the missing chunks are read from the database at once (and again on the next stored
mark if they were not stored yet); before ``end`` and before a status
every stored chunk is sent, so the client never sees a hole. Every heartbeat
(``WEBSOCKET_HEARTBEAT_S``) sends the chunks stored by the previous heartbeat that have not arrived
yet, and the ``end`` (after every stored chunk) once the row is terminal, so even a lost ``end`` or
stored mark arrives one or two heartbeats late rather than never. At most
``HOLD_MAX`` live chunks are held; later ones are left to the database.

Permission is checked on connect and again on later events (``crucible.ws_auth.GuardedConsumer``):
a revoked token, a deactivated user, a signed-out session or a lost right to see the evaluation
closes the connection. Status, alert and end events are always re-checked; log, sample and stored
events at most once per ``recheck_s``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import parse_qs

from django.db.models import OuterRef, Subquery

from apps.evaluations import publisher
from apps.evaluations.models import Evaluation, OutputChunk
from crucible.ws_auth import EVENT_ANSWER_MAX_AGE_S, CloseCode, GuardedConsumer, SharedAnswers
from crucible.ws_db import pooled_db
from crucible.ws_direct import Frame, Frames

REPLAY_BATCH = 500
HOLD_MAX = 1000
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


# Each viewer of a run in a process is sent the same text for a live chunk or sample: it is encoded
# (and framed, crucible.ws_direct) once.
frames = Frames()


def live_frame(evaluation_id: uuid.UUID | None, event: publisher.LogMessage) -> Frame:
    """A live log event's frame (a queued event is each viewer's own copy, so it is keyed by what it says)."""
    return frames.get((evaluation_id, event["seq"], event["stream"], event["ts"], event["data"]), event)


def event_frame(event_id: str, event: dict) -> Frame:
    """A published event's frame, keyed by its ``id`` (which names the publication: a run's status and
    end are one, so by the event's type too)."""
    return frames.get((event_id, event.get("type")), event)


STATE_MAX_AGE_S = 1.0
stream_states = SharedAnswers()  # evaluation id -> (row, last stored seq), for heartbeats


@pooled_db
def _stream_state(evaluation_id: uuid.UUID) -> tuple[Evaluation | None, int]:
    """The evaluation's row and the highest stored ``seq`` (0 if none), read in one statement (one snapshot)."""
    last = OutputChunk.objects.filter(evaluation_id=OuterRef("pk")).order_by("-seq").values("seq")[:1]
    evaluation = (
        Evaluation.objects.only("id", "status", "exit_code", "reason")
        .annotate(stored_seq=Subquery(last))
        .filter(pk=evaluation_id)
        .first()
    )
    return evaluation, (evaluation.stored_seq or 0) if evaluation is not None else 0


class EvaluationConsumer(GuardedConsumer):
    evaluation_id: uuid.UUID | None = None
    last_seq = 0
    _stored_at_last_beat = 0  # how far the output was stored at the previous heartbeat
    held: dict[int, publisher.LogMessage]

    async def connect(self):
        self.held = {}
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
        self.take_directly(self._take_directly)
        evaluation, stored = await self._open_stream(after)
        if evaluation is None:  # deleted in between
            return await self.finish(CloseCode.NOT_FOUND)
        await self.send_json(publisher.status_message(evaluation.status))
        self.last_seq = after
        if await self._send_stored(stored):
            await self._replay()  # more than one batch was stored
        await self._release_held()
        if evaluation.is_terminal:
            # Terminal was read before the replay, so every chunk was stored and has been sent.
            await self.send_json(publisher.end_message(evaluation))
            await self.finish(CloseCode.NORMAL)

    async def heartbeat(self) -> None:
        """Catch up with events the channel layer may have dropped (nobody subscribed at that moment,
        Redis away, a full queue): the chunks that were stored by the previous heartbeat and have not
        arrived, and once the row is terminal every stored chunk and the end.

        The run's state (its row and how far its output is stored) is read once for all of this
        process's viewers of the run (at most ``STATE_MAX_AGE_S`` old); the chunks only by a viewer
        that is behind."""
        if not await self.still_allowed(always=False):
            return
        evaluation, stored_seq = await stream_states.get(
            self.evaluation_id, lambda: _stream_state(self.evaluation_id), max_age=STATE_MAX_AGE_S
        )
        if evaluation is None:
            return await self.finish(CloseCode.NOT_ALLOWED)
        if evaluation.is_terminal:  # read before the replay, so every chunk was stored and sent
            if stored_seq > self.last_seq:
                await self._catch_up()
            await self.send_json(publisher.end_message(evaluation))
            return await self.finish(CloseCode.NORMAL)
        # Only what was stored by the previous heartbeat and is still missing was lost: a chunk
        # stored since is most likely still on its way here, queued behind others while Daphne is
        # busy, and reading it from the database as well would add work just when there is too much.
        if self._stored_at_last_beat > self.last_seq:
            await self._catch_up()
        self._stored_at_last_beat = stored_seq

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
        event_id = message.get("id")
        if not await self.still_allowed(always=kind not in FREQUENT_EVENTS, event_id=event_id):
            return
        if kind == "log":
            await self._take_live(event)
        elif kind == "end":
            # The worker stored everything before publishing the end.
            await self._catch_up_after(event_id, message.get("stored_seq"))
            await self._send_event(event_id, event)
            await self.finish(CloseCode.NORMAL)
        elif kind == "status":
            # Chunks stored before a status change come before it, even if their events were lost.
            await self._catch_up_after(event_id, message.get("stored_seq"))
            await self._send_event(event_id, event)
        else:
            await self._send_event(event_id, event)

    async def _send_event(self, event_id: str | None, event: dict) -> None:
        """Send a published event; one with an id is encoded and framed once for every viewer of this
        process (a run's end reaches all its viewers at once)."""
        if not event_id:
            return await self.send_json(event)
        frame = event_frame(event_id, event)
        if not self.write_directly(frame):
            await self.send(text_data=frame.text)

    async def evaluation_stored(self, message: publisher.StoredEvent):
        """The worker stored every chunk up to ``message["seq"]``: if we have not sent them all, read them."""
        if self.finished or message["seq"] <= self.last_seq:
            return
        if not await self.still_allowed(always=False):
            return
        await self._catch_up()

    def _take_directly(self, message: dict) -> bool:
        """The channel layer's offer of a group message before it is queued (``take_directly``).

        * A stored mark this viewer is not behind is dropped, as its handler would do nothing.
        * The next live chunk, and a resource sample, are written at once, framed once for all of
          this process's viewers, when no handler runs and the permission check is fresh.

        Anything else (a status, a mark it is behind, a chunk further ahead, one that needs a
        re-check) is left to the queue and its handler; as handlers run one at a time and the queue is
        empty when this is asked, order is kept."""
        kind = message.get("type")
        if kind == "evaluation.stored":
            return message["seq"] <= self.last_seq
        if kind != "evaluation.event" or self.held:
            return False
        event = message["event"]
        if event.get("type") == "log":
            if event["seq"] != self.last_seq + 1 or not self.may_take_directly():
                return False
            if not self.write_directly(live_frame(self.evaluation_id, event)):
                return False
            self.last_seq = event["seq"]
            return True
        if event.get("type") == "sample" and message.get("id"):
            return self.may_take_directly() and self.write_directly(event_frame(message["id"], event))
        return False

    # --- helpers ---------------------------------------------------------------------------

    async def _take_live(self, event: publisher.LogMessage) -> None:
        """Send a live chunk if it is the next one; hold it if chunks before it have not been sent yet."""
        seq = event["seq"]
        if seq <= self.last_seq:
            return  # already sent by the replay (or a duplicate publish)
        if seq == self.last_seq + 1:
            frame = live_frame(self.evaluation_id, event)
            if not self.write_directly(frame):
                await self.send(text_data=frame.text)
            self.last_seq = seq
            return await self._release_held()
        first_gap = not self.held
        if len(self.held) < HOLD_MAX:
            self.held[seq] = event
        if first_gap:  # the chunks in between may be stored already (their events lost): read them
            await self._replay(before=seq)
            await self._release_held()

    async def _catch_up_after(self, event_id: str | None, stored_seq: int | None = None) -> None:
        """``_catch_up`` after an event: how far the output is stored is what the event says (the worker's
        end), else read once per event for all of this process's viewers of the run (after the event
        arrived); the chunks are read only by a viewer that is behind."""
        if stored_seq is not None:
            if stored_seq > self.last_seq:
                await self._catch_up()
            return
        if not event_id:
            return await self._catch_up()
        _, stored_seq = await stream_states.get(
            (self.evaluation_id, event_id), lambda: _stream_state(self.evaluation_id), max_age=EVENT_ANSWER_MAX_AGE_S
        )
        if stored_seq > self.last_seq:
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Send every stored chunk not sent yet, then the held live chunks that follow them."""
        await self._replay()
        await self._release_held()

    async def _release_held(self) -> None:
        """Forget held chunks already sent; send those that are next, in order."""
        for seq in [seq for seq in self.held if seq <= self.last_seq]:
            del self.held[seq]
        while not self.finished and self.last_seq + 1 in self.held:
            event = self.held.pop(self.last_seq + 1)
            await self.send_json(event)
            self.last_seq = event["seq"]

    async def _replay(self, before: int | None = None) -> None:
        """Send stored chunks with last_seq < seq (< before), in order, in batches."""
        while not self.finished:
            if not await self._send_stored(await self._chunks(self.last_seq, before)):
                return

    async def _send_stored(self, batch: list[StoredChunk]) -> bool:
        """Send a batch of stored chunks, in order; whether it was a full one (more may follow)."""
        for seq, stream, text, ts in batch:
            if self.finished:
                return False
            await self.send_json(publisher.log_message(seq, stream, text, ts))
            self.last_seq = seq
        return len(batch) == REPLAY_BATCH

    @pooled_db
    def _chunks(self, after: int, before: int | None) -> list[StoredChunk]:
        return _stored_chunks(self.evaluation_id, after, before)

    @pooled_db
    def _open_stream(self, after: int) -> tuple[Evaluation | None, list[StoredChunk]]:
        """The row, then the first batch of chunks stored after ``after``: read in that order (a
        terminal row read before the chunks means they are all stored), in one call to the database
        threads (a handshake waited for two, each with its connection's check, in a storm of them)."""
        evaluation = (
            Evaluation.objects.only("id", "status", "exit_code", "reason").filter(pk=self.evaluation_id).first()
        )
        if evaluation is None:
            return None, []
        return evaluation, _stored_chunks(self.evaluation_id, after, None)


StoredChunk = tuple[int, str, str, datetime]  # seq, stream, text, when it was written


def _stored_chunks(evaluation_id: uuid.UUID | None, after: int, before: int | None) -> list[StoredChunk]:
    """Up to ``REPLAY_BATCH`` stored chunks with ``after < seq`` (``< before``), in order."""
    chunks = OutputChunk.objects.filter(evaluation_id=evaluation_id, seq__gt=after)
    if before is not None:
        chunks = chunks.filter(seq__lt=before)
    chunks = chunks.order_by("seq").only("seq", "stream", "data", "created_at")[:REPLAY_BATCH]
    return [(c.seq, c.stream, c.text, c.created_at) for c in chunks]
