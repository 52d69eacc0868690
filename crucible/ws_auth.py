"""Who is on the other end of a WebSocket: an API token, else the browser session.

``Authorization: Token <key>`` wins when present (the CLI and scripts send it); a token that is
unknown, revoked or whose user is inactive leaves the connection anonymous, so the consumer
closes it with 4401. It never falls back to the session cookie: a client that names a token
means that token. Without the header, the Django session cookie decides (browsers).

The scope gains ``user`` and ``api_token_id`` (None for session connections), so the consumer
can re-check the token on later events.

``GuardedConsumer`` is what both streams (an evaluation's, the operators' alerts) share: the close
codes of the contract, accept-then-refuse, the per-user connection limit, a heartbeat, and the
permission re-check on later events.

Which browsers may open a WebSocket at all (the origin check) is ``crucible.ws_origin``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass
from enum import IntEnum

from channels.auth import AuthMiddlewareStack
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db.models import Exists, OuterRef
from redis.exceptions import RedisError

from apps.accounts.authentication import blocked_address, count_failed_token, parse_authorization
from apps.accounts.models import ApiToken, TokenRefusal, hash_key
from apps.accounts.roles import with_operator_flag
from crucible import ws_limits
from crucible.ws_db import pooled_db
from crucible.ws_direct import Frame, direct_writer

log = logging.getLogger(__name__)

# Events can arrive dozens of times a second per connection, and every database call from a
# consumer goes through Channels' single database thread; re-reading the user, token and row for
# each one would make one busy stream slow every other connection.
PERMISSION_RECHECK_S = 1.0
# An answer asked after a given event arrived serves every connection that handles that event; the
# connections of a process handle one event within moments, this is only how long it is remembered.
EVENT_ANSWER_MAX_AGE_S = 60.0
# A handshake may take what its token was worth this long ago (checked for another handshake of this
# process): a revoked token, like a revoked right, is refused within this bound.
TOKEN_ANSWER_MAX_AGE_S = PERMISSION_RECHECK_S
# A shared answer this far into its life (of PERMISSION_RECHECK_S) is asked anew in the background by
# the direct path (GuardedConsumer.may_take_directly).
REFRESH_AHEAD = 0.75
# Clients have nothing to say on these streams; a message larger than this is refused unread.
MAX_CLIENT_MESSAGE_BYTES = 4096


class CloseCode(IntEnum):
    """WebSocket close codes of the contract (architecture.md)."""

    # Servers may send only 1000 or 3000-4999 (autobahn refuses the rest), so the 4xxx codes mirror
    # the HTTP status that means the same. Daphne itself closes 1009 above its 1 MiB message limit.
    NORMAL = 1000
    BAD_REQUEST = 4400  # malformed ?after= or client message (a client bug, not a permission)
    NOT_SIGNED_IN = 4401
    NOT_ALLOWED = 4403
    NOT_FOUND = 4404  # no such evaluation, or no such WebSocket path
    MESSAGE_TOO_BIG = 4413  # a client message over MAX_CLIENT_MESSAGE_BYTES
    TOO_MANY_CONNECTIONS = 4429  # the user already holds WEBSOCKET_MAX_PER_USER connections
    TRY_AGAIN_LATER = 4503  # Redis, which counts connections, did not answer


def handshake_header(scope, name: bytes) -> bytes | None:
    """The value of the handshake's header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


@dataclass(frozen=True)
class TokenAnswer:
    """What a key is worth at the moment it was checked: its user and token, or why it is refused."""

    user: object  # the token's user, or AnonymousUser
    token_id: int | None
    refusal: TokenRefusal | None


@pooled_db
def _check_token(key: str) -> TokenAnswer:
    token, refusal = ApiToken.check_key(key)
    if refusal is not None:
        return TokenAnswer(AnonymousUser(), None, refusal)
    token.record_use()
    return TokenAnswer(token.user, token.pk, None)


@pooled_db
def _blocked(address: str | None) -> bool:
    return blocked_address(address) is not None


@pooled_db
def _count_failure(address: str | None) -> None:
    count_failed_token(address)


async def _token_user(key: str, address: str | None):
    """The token's user and id, or anonymous; an unknown key counts as a failed sign-in of ``address``,
    and an address over its limit is not signed in at all (the API throttles the same guesser: 429).

    The throttle is told at every failed attempt, and asked at every attempt: attempts from one
    address while its answer is being read share that answer (a storm of one script's viewers
    connecting asked Redis, through a database thread, once each). What the key is worth is shared by
    the handshakes of this process that name the same key at about the same time: a valid answer for
    at most ``TOKEN_ANSWER_MAX_AGE_S``, a refusal only with the attempts that asked while it was being
    read. Answers are keyed by the key's hash, so two keys (two users) never share one."""
    if await shared_tokens.get(("blocked", address), lambda: _blocked(address), max_age=0.0, keep=lambda _: False):
        return AnonymousUser(), None
    answer = await shared_tokens.get(
        ("token", hash_key(key)),
        lambda: _check_token(key),
        max_age=TOKEN_ANSWER_MAX_AGE_S,
        keep=lambda answer: answer.refusal is None,
    )
    if answer.refusal is TokenRefusal.UNKNOWN:
        await _count_failure(address)  # only a guess names no token; an expired or revoked key was real
    return answer.user, answer.token_id


class TokenAuthMiddleware:
    """ASGI middleware: token header first, else the session stack (cookie, session, user)."""

    def __init__(self, inner):
        self.inner = inner
        self.session_stack = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        header = handshake_header(scope, b"authorization")
        key = parse_authorization(header)
        if key is None:
            # No header, or not a Token one (e.g. Basic): the browser session decides.
            return await self.session_stack(dict(scope, api_token_id=None), receive, send)
        client = scope.get("client") or (None, None)
        user, token_id = await _token_user(key, client[0])
        return await self.inner(dict(scope, user=user, api_token_id=token_id), receive, send)


def still_signed_in(scope):
    """The connection's user if its credentials still hold (an active user, and the token not revoked
    or the session not signed out since the handshake), else None. Call from a sync context.

    The user, whether its token still holds and whether it is an operator are read in one query
    (the user then answers ``is_operator`` without another)."""
    users = with_operator_flag(
        get_user_model().objects.filter(pk=getattr(scope.get("user"), "pk", None), is_active=True)
    )
    token_id = scope.get("api_token_id")
    if token_id is not None:
        users = users.annotate(token_holds=Exists(ApiToken.objects.active().filter(pk=token_id, user=OuterRef("pk"))))
    user = users.first()
    if user is None:
        return None
    if token_id is not None:
        return user if user.token_holds else None
    session = scope.get("session")
    key = getattr(session, "session_key", None)
    if session is not None and (not key or not session.exists(key)):
        return None  # signed out since
    return user


def TokenAuthMiddlewareStack(inner):  # noqa: N802 (named like Channels' AuthMiddlewareStack)
    return TokenAuthMiddleware(inner)


class SharedAnswers:
    """Answers to one question per key, shared by a process's connections.

    A hundred viewers of one run with one token would each re-read the user, the token and the row
    once per ``recheck_s`` (and the run's state at each heartbeat): hundreds of queries a second for
    the same answer. A connection that may use an answer up to ``max_age`` old takes the latest one
    for its key, or waits for the one in flight; one that needs a fresh answer (``max_age=None``)
    asks anew, and leaves its answer for the others. An answer counts from when it was asked.
    Answers are per event loop (one Daphne process has one; tests make one per test).
    """

    def __init__(self):
        self._latest: dict = {}
        self._in_flight: dict = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _forget_other_loops(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._latest.clear()
            self._in_flight.clear()

    async def get(self, key, ask, *, max_age: float | None, keep=None):
        """``await ask()``, or the latest answer for ``key`` asked at most ``max_age`` seconds ago. An
        answer for which ``keep(answer)`` is false serves only the callers that waited for it."""
        self._forget_other_loops()
        now = time.monotonic()
        if max_age is not None:
            latest = self._latest.get(key)
            if latest is not None and now - latest[0] < max_age:
                return latest[1]
            pending = self._in_flight.get(key)
            if pending is not None:
                return await asyncio.shield(pending)
        task = asyncio.ensure_future(ask())
        self._in_flight[key] = task
        try:
            answer = await asyncio.shield(task)
        finally:
            if self._in_flight.get(key) is task:
                del self._in_flight[key]
        if keep is None or keep(answer):
            self._remember(key, now, answer)
        return answer

    def refresh(self, key, ask) -> None:
        """Ask ``ask()`` for ``key`` in the background unless an answer is already on its way; the
        answer is kept for the next ``get`` or ``fresh`` (a failure is logged and forgotten)."""
        self._forget_other_loops()
        if key in self._in_flight:
            return
        task = asyncio.ensure_future(self.get(key, ask, max_age=0.0))
        task.add_done_callback(_log_failure)

    def fresh(self, key, max_age: float):
        """(when it was asked, the answer) if an answer for ``key`` at most ``max_age`` seconds old is
        known, else None; asks nothing (for code that cannot wait)."""
        self._forget_other_loops()
        latest = self._latest.get(key)
        if latest is not None and time.monotonic() - latest[0] < max_age:
            return latest
        return None

    def _remember(self, key, asked: float, answer) -> None:
        if len(self._latest) > 10_000:  # forget the answers of streams long gone
            self._latest = {k: v for k, v in self._latest.items() if asked - v[0] < 60}
        latest = self._latest.get(key)
        if latest is None or latest[0] <= asked:
            self._latest[key] = (asked, answer)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a background permission re-check failed", exc_info=task.exception())


shared_checks = SharedAnswers()  # permission re-checks (GuardedConsumer.still_allowed)
shared_tokens = SharedAnswers()  # what a handshake's token is worth (_token_user)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Every WebSocket path that names no stream: accepted, then closed with 4404 (never a 500)."""

    async def connect(self):
        await self.accept()
        await self.close(int(CloseCode.NOT_FOUND))

    async def receive(self, text_data=None, bytes_data=None):
        """The connection is closing; nothing to read."""


class GuardedConsumer(AsyncJsonWebsocketConsumer):
    """A server-to-client JSON stream that checks access on connect and again on later events.

    Subclasses implement ``denies(user)``: None when the signed-in ``user`` may have this stream,
    else the close code. A connection is accepted before any refusal so the client receives the
    code (a close before accept reaches it only as a bare HTTP 403 during the handshake).

    Each signed-in connection holds one of its user's ``WEBSOCKET_MAX_PER_USER`` slots
    (``crucible.ws_limits``) until it ends, however it ends; the process renews them all together.
    Every ``WEBSOCKET_HEARTBEAT_S`` it calls ``heartbeat()``, which subclasses use to catch up with what the
    channel layer may have dropped. Handlers and heartbeats run one at a time.
    """

    recheck_s = PERMISSION_RECHECK_S
    group: str | None = None
    finished = False
    _checked_at = 0.0
    _slot_user_id: int | None = None
    _beat_task: asyncio.Task | None = None
    _losing: asyncio.Future | None = None
    _writer = None  # crucible.ws_direct's writer for this connection, when Daphne serves it

    async def __call__(self, scope, receive, send):
        """Channels' ``AsyncConsumer.__call__`` with a cheaper loop (``_pump``), then the clean-up."""
        self._turn = asyncio.Lock()
        self.scope = scope
        self.base_send = send
        try:
            self.channel_layer = get_channel_layer(self.channel_layer_alias)
            sources = [receive]
            if self.channel_layer is not None:
                self.channel_name = await self.channel_layer.new_channel()
                sources.append(functools.partial(self.channel_layer.receive, self.channel_name))
            await self._pump(sources)
        finally:
            await self._clean_up()

    async def _pump(self, sources) -> None:
        """Dispatch what each of ``sources`` (the client, the channel layer) yields, one source after
        another in a task of its own, until a handler stops the consumer (``StopConsumer``) or fails.

        Channels' ``await_many_dispatch`` makes a task for every message and waits on all sources
        afresh (``asyncio.wait``) after each: with a thousand viewers each sent every line, that was a
        good part of a Daphne process's time. Handlers still run one at a time (``dispatch``)."""

        async def drain(source):
            while True:
                await self.dispatch(await source())

        tasks = [asyncio.ensure_future(drain(source)) for source in sources]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a handler's StopConsumer or error
        except StopConsumer:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def dispatch(self, message):
        """Channels' dispatch without its hop to the database thread before every message
        (``aclose_old_connections``): these consumers reach the database only through
        ``crucible.ws_db``, whose threads look after their own connections. With a thousand viewers
        that hop, thousands a second through one thread, was most of a Daphne process's time."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        async with self._turn:
            await handler(message)

    async def heartbeat(self) -> None:
        """Called every ``WEBSOCKET_HEARTBEAT_S`` while the connection is open."""
        await self.still_allowed(always=False)

    async def open(self) -> bool:
        """Accept, then refuse anonymous clients and users over their connection limit; True when
        the connection may go on."""
        await self.accept()
        self._writer = direct_writer(self.base_send)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.finish(CloseCode.NOT_SIGNED_IN)
            return False
        refused = await self._take_slot(user.pk)
        if refused:
            await self.finish(refused)
            return False
        self._beat_task = asyncio.create_task(self._beat())
        return True

    def denies(self, user) -> CloseCode | None:
        raise NotImplementedError

    async def admit(self) -> bool:
        """The first permission check; refuses with the subclass's close code. Like a re-check, it may
        take an answer for the same stream and credentials up to ``recheck_s`` old (a storm of one
        user's viewers connecting asks once a second, not once each); the token was checked by the
        handshake (``_token_user``) within the same bound."""
        denied = await shared_checks.get(self._access_key(), self._ask_access, max_age=self.recheck_s)
        if denied:
            await self.finish(denied)
            return False
        self._checked_at = time.monotonic()
        return True

    async def still_allowed(self, *, always: bool, event_id: str | None = None) -> bool:
        """Re-check before sending an event: every time when ``always``, else at most once per ``recheck_s``.
        An event published with an id (``event_id``) is re-checked once for all the connections of
        this process with the same stream and credentials: the check is made after the event arrived."""
        now = time.monotonic()
        if not always and now - self._checked_at < self.recheck_s:
            return True
        if always and event_id:
            key, max_age = (*self._access_key(), event_id), EVENT_ANSWER_MAX_AGE_S
        else:
            key, max_age = self._access_key(), None if always else self.recheck_s
        denied = await shared_checks.get(key, self._ask_access, max_age=max_age)
        self._checked_at = now
        if denied:
            # The client was let in before, so a lost right is "not allowed", not "no such".
            await self.finish(CloseCode.NOT_ALLOWED if denied == CloseCode.NOT_FOUND else denied)
            return False
        return True

    async def subscribe(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)

    def take_directly(self, taker) -> None:
        """Have the channel layer offer this connection's group messages to ``taker`` before queueing
        them (``crucible.channel_layer``), where the layer can and this connection can be written to
        directly (``crucible.ws_direct``); a taker runs outside any handler, in the layer's turn."""
        if self._writer is not None and hasattr(type(self.channel_layer), "take_directly"):
            self.channel_layer.take_directly(self.channel_name, taker)

    def may_take_directly(self) -> bool:
        """Whether a direct taker may act now: the connection is open, no handler or heartbeat runs
        (``_turn``), and its permission was checked within ``recheck_s``, by itself or by another
        connection with the same access key (the answer then counts from when it was asked). An
        answer past ``REFRESH_AHEAD`` of its life is asked anew in the background, once for all of
        them, so that a busy stream's viewers keep a fresh one rather than all re-checking together
        when it runs out."""
        if self.finished or self._turn.locked():
            return False
        now = time.monotonic()
        if now - self._checked_at < self.recheck_s * REFRESH_AHEAD:
            return True
        key = self._access_key()
        known = shared_checks.fresh(key, self.recheck_s)
        if known is None or known[1]:
            return False  # not known, or a refusal: the handler's re-check decides and closes
        if now - known[0] >= self.recheck_s * REFRESH_AHEAD:
            shared_checks.refresh(key, self._ask_access)
        self._checked_at = max(self._checked_at, known[0])
        return True

    def write_directly(self, frame: Frame) -> bool:
        """Write ``frame`` to the client at once, framed once for every connection it is written to;
        False when this connection cannot be written to directly (then send it as usual)."""
        return self._writer is not None and not self.finished and self._writer(frame)

    async def unsubscribe(self) -> None:
        if hasattr(type(self.channel_layer), "take_directly") and getattr(self, "channel_name", None):
            self.channel_layer.stop_taking_directly(self.channel_name)
        if self.group is not None:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)

    async def finish(self, code: int) -> None:
        """Close with ``code``; the connection's slot is free again at once."""
        self.finished = True
        await self.unsubscribe()
        await self._give_back_slot()
        await self.close(int(code))  # autobahn (Daphne) refuses an IntEnum: "must be an integer"

    async def websocket_disconnect(self, message):
        """Channels' without its hop to the database thread (``aclose_old_connections``), as in
        ``dispatch``. That thread is also the one Django's sync views run on: when a thousand viewers
        left together (their runs ended), a thousand hops queued before the health endpoint's answer
        and held it up for more than a second. The group is left in ``disconnect``."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code):
        self.finished = True
        await self.unsubscribe()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """Clients have nothing to say: a JSON text message is ignored; one over
        ``MAX_CLIENT_MESSAGE_BYTES`` closes with 4413, anything else that is not JSON (binary, too
        deeply nested) with 4400."""
        if self.finished:
            return
        size = len(bytes_data or b"") if text_data is None else len(text_data.encode("utf-8", "surrogatepass"))
        if size > MAX_CLIENT_MESSAGE_BYTES:
            return await self.finish(CloseCode.MESSAGE_TOO_BIG)
        try:
            json.loads(text_data)
        except (TypeError, ValueError, RecursionError):
            return await self.finish(CloseCode.BAD_REQUEST)

    # --- the connection's slot and heartbeat --------------------------------------------------

    async def _take_slot(self, user_id: int) -> CloseCode | None:
        try:
            if not await ws_limits.acquire(user_id, self.channel_name):
                return CloseCode.TOO_MANY_CONNECTIONS
        except RedisError:
            log.warning("could not count WebSocket connections in Redis", exc_info=True)
            return CloseCode.TRY_AGAIN_LATER
        self._slot_user_id = user_id
        ws_limits.renewals().hold(user_id, self.channel_name, self._slot_lost)
        return None

    async def _beat(self) -> None:
        """Call ``heartbeat`` every ``WEBSOCKET_HEARTBEAT_S`` until the stream ends (the process renews
        its connections' slots together: ``ws_limits.Renewals``)."""
        while not self.finished:
            await asyncio.sleep(settings.WEBSOCKET_HEARTBEAT_S)
            async with self._turn:
                if self.finished:
                    return
                try:
                    await self.heartbeat()
                except Exception:  # noqa: BLE001 (a failed beat must not end the beats; the next one retries)
                    log.warning("WebSocket heartbeat failed", exc_info=True)

    def _slot_lost(self) -> None:
        """The lease ran out while this process stalled and the user's other connections took the slot."""
        self._losing = asyncio.ensure_future(self._close_for_lost_slot())

    async def _close_for_lost_slot(self) -> None:
        async with self._turn:
            if not self.finished:
                await self.finish(CloseCode.TOO_MANY_CONNECTIONS)

    async def _clean_up(self) -> None:
        """However the connection ended (goodbye, error, cancellation): stop beating, leave the
        group and give the slot back. What fails here is left to the group's and the lease's expiry."""
        self.finished = True
        if self._beat_task is not None:
            self._beat_task.cancel()
        with contextlib.suppress(Exception):
            if self.group is None:
                await self.unsubscribe()  # no group to leave (``finish`` left it): no Redis call to bound
            else:
                await asyncio.wait_for(self.unsubscribe(), ws_limits.REDIS_TIMEOUT_S)
        await self._give_back_slot()

    async def _give_back_slot(self) -> None:
        """Free the slot now; if Redis does not answer, the lease frees it after a few heartbeats."""
        if self._slot_user_id is not None:
            user_id, self._slot_user_id = self._slot_user_id, None
            try:
                await asyncio.wait_for(
                    ws_limits.renewals().release(user_id, self.channel_name), ws_limits.REDIS_TIMEOUT_S
                )
            except (RedisError, TimeoutError):
                log.warning("could not give a WebSocket slot back; its lease will run out", exc_info=True)

    def _access_key(self) -> tuple:
        """What ``denies`` and the credentials' re-check depend on: the stream (this class at this path)
        and the credentials (user, token, browser session). Connections with the same key get the same answer."""
        session = self.scope.get("session")
        return (
            type(self).__qualname__,
            self.scope.get("path"),
            getattr(self.scope.get("user"), "pk", None),
            self.scope.get("api_token_id"),
            getattr(session, "session_key", None),
        )

    def _ask_access(self):
        """``_access_denied()``, made only when a check is really asked: taking ``self._access_denied``
        itself wraps it anew (asgiref's ``__get__``), thousands of times a second for answers already known."""
        return self._access_denied()

    @pooled_db
    def _access_denied(self) -> int:
        """0 while the connection may go on, else the close code."""
        user = still_signed_in(self.scope)
        if user is None:
            return CloseCode.NOT_SIGNED_IN
        return self.denies(user) or 0
