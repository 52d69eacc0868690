"""The live transcript of one session: ``WS /ws/sandboxes/{id}/?after=N`` (architecture.md, Sessions).

The host that performs a step records it and publishes it twice (``operations``): when it starts
(``status: running``) and when it is done. On connect the consumer subscribes to the session's group
*first*, then reads the row and replays the stored steps with ``seq > after``. Channels dispatches
one message at a time, so events published while the replay runs wait in this connection's channel
and are handled afterwards. A step can therefore reach us twice or three times (stored and live,
running and done) in any order; the consumer remembers what it sent of each step and forwards a
version only when it is news:

* a step not sent yet is sent as it is (running or done);
* a step sent as running is sent again once it is done;
* a step sent as done is never sent again (a late ``running`` event of it is dropped).

So a client ends with the final version of every step it was sent, and never sees a finished step
twice. Nothing is lost: a step published before we subscribed was stored before our read (both
versions are written before they are published), so the replay has it; one published after reaches
us live. Live delivery is best effort (publishing can fail, a slow client's channel can fill up), so
before ``end`` and at every heartbeat (``WEBSOCKET_HEARTBEAT_S``) the consumer reads the steps it has
not yet sent as done, and sends ``end`` once the row has ended even if the ``end`` event was lost.

What the consumer remembers is bounded: ``done_upto`` is the highest seq such that every step up to
it was sent done; only the steps above it are remembered one by one.

Permission is checked on connect and again on later events (``crucible.ws_auth.GuardedConsumer``).
Another user's session is "no such session" (4404), exactly as on the API.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

from apps.sessions import publisher
from apps.sessions.models import Session, Status, Step, StepStatus
from crucible.ws_auth import CloseCode, GuardedConsumer
from crucible.ws_db import pooled_db

REPLAY_BATCH = 200
FREQUENT_EVENTS = ("step",)


def _parse_uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return None


def _parse_after(query_string: bytes) -> int | None:
    """``?after=N`` (ASCII digits, at most 12), 0 when absent, None when malformed."""
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return 0
    raw = values[-1]
    # ASCII digits only: str.isdigit() also accepts "²" and "①", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        return None
    return int(raw)


class SessionConsumer(GuardedConsumer):
    session_id: uuid.UUID | None = None
    done_upto = 0
    sent: dict[int, str]

    async def connect(self):
        self.sent = {}
        if not await self.open():
            return
        session_id = _parse_uuid(self.scope["url_route"]["kwargs"].get("session_id"))
        if session_id is None:
            return await self.finish(CloseCode.NOT_FOUND)
        after = _parse_after(self.scope.get("query_string", b""))
        if after is None:
            return await self.finish(CloseCode.BAD_REQUEST)
        self.session_id = session_id
        # Another user's session is "no such session": an outsider learns nothing.
        if not await self.admit():
            return

        # Subscribe first, then read: see the module docstring.
        await self.subscribe(publisher.group_name(session_id))
        session = await self._load()
        if session is None:  # deleted in between
            return await self.finish(CloseCode.NOT_FOUND)
        await self.send_json(publisher.status_message(session.status))
        self.done_upto = after
        await self._catch_up()
        if session.status == Status.ENDED:
            # Ended was read before the replay: every step recorded by then has been sent.
            await self._send_end(session)

    async def heartbeat(self) -> None:
        """Catch up with events the channel layer may have dropped: steps not yet sent as done, and
        the end once the row has ended."""
        if not await self.still_allowed(always=False):
            return
        session = await self._load()
        if session is None:
            return await self.finish(CloseCode.NOT_ALLOWED)
        await self._catch_up()
        if session.status == Status.ENDED:
            await self._send_end(session)

    def denies(self, user) -> CloseCode | None:
        if not Session.objects.visible_to(user).filter(pk=self.session_id).exists():
            return CloseCode.NOT_FOUND
        return None

    async def session_event(self, message: dict):
        """An event from the publisher; ``message["event"]`` is exactly the client message."""
        if self.finished:
            return
        event = message["event"]
        kind = event["type"]
        if not await self.still_allowed(always=kind not in FREQUENT_EVENTS):
            return
        if kind == "step":
            await self._offer(event)
        elif kind == "end":
            session = await self._load()
            await self._catch_up()
            if session is None:
                return await self.finish(CloseCode.NORMAL)
            await self._send_end(session)
        else:
            await self.send_json(event)

    # --- helpers ---------------------------------------------------------------------------

    async def _offer(self, message: publisher.StepMessage) -> None:
        """Send one version of a step if it is news to the client (see the module docstring)."""
        step = message["step"]
        seq, status = step["seq"], step["status"]
        if seq <= self.done_upto:
            return
        previous = self.sent.get(seq)
        if previous == StepStatus.DONE or (previous == StepStatus.RUNNING and status != StepStatus.DONE):
            return
        await self.send_json(message)
        self.sent[seq] = status
        self._advance()

    def _advance(self) -> None:
        """Move ``done_upto`` over steps sent done, forgetting them one by one."""
        while self.sent.get(self.done_upto + 1) == StepStatus.DONE:
            self.done_upto += 1
            del self.sent[self.done_upto]

    async def _catch_up(self) -> None:
        """Send, in order, every stored step above ``done_upto`` whose stored version is news."""
        after = self.done_upto
        while not self.finished:
            batch = await self._steps(after)
            for step in batch:
                await self._offer(publisher.step_message(step))
            if len(batch) < REPLAY_BATCH:
                return
            after = batch[-1].seq

    async def _send_end(self, session: Session) -> None:
        await self.send_json(publisher.end_message(session))
        await self.finish(CloseCode.NORMAL)

    @pooled_db
    def _steps(self, after: int) -> list[Step]:
        return list(Step.objects.filter(session_id=self.session_id, seq__gt=after).order_by("seq")[:REPLAY_BATCH])

    @pooled_db
    def _load(self) -> Session | None:
        return Session.objects.only("id", "status", "end_reason", "error").filter(pk=self.session_id).first()
