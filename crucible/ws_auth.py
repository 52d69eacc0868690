"""Who is on the other end of a WebSocket: an API token, else the browser session.

``Authorization: Token <key>`` wins when present (the CLI and scripts send it); a token that is
unknown, revoked or whose user is inactive leaves the connection anonymous, so the consumer
closes it with 4401. It never falls back to the session cookie: a client that names a token
means that token. Without the header, the Django session cookie decides (browsers).

The scope gains ``user`` and ``api_token_id`` (None for session connections), so the consumer
can re-check the token on later events.

``GuardedConsumer`` is what both streams (an evaluation's, the operators' alerts) share: the close
codes of the contract, accept-then-refuse, and the permission re-check on later events.
"""

from __future__ import annotations

import time
from enum import IntEnum

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from apps.accounts.authentication import parse_authorization
from apps.accounts.models import ApiToken

# Events can arrive dozens of times a second per connection, and every database call from a
# consumer goes through Channels' single database thread; re-reading the user, token and row for
# each one would make one busy stream slow every other connection.
PERMISSION_RECHECK_S = 1.0


class CloseCode(IntEnum):
    """WebSocket close codes of the contract (architecture.md)."""

    NORMAL = 1000
    BAD_REQUEST = 4400  # malformed ?after= (not in the contract's list: a client bug, not a permission)
    NOT_SIGNED_IN = 4401
    NOT_ALLOWED = 4403
    NOT_FOUND = 4404


def _authorization_header(scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value
    return None


@database_sync_to_async
def _token_user(key: str):
    token = ApiToken.authenticate(key)
    if token is None:
        return AnonymousUser(), None
    return token.user, token.pk


class TokenAuthMiddleware:
    """ASGI middleware: token header first, else the session stack (cookie, session, user)."""

    def __init__(self, inner):
        self.inner = inner
        self.session_stack = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        header = _authorization_header(scope)
        key = parse_authorization(header)
        if key is None:
            # No header, or not a Token one (e.g. Basic): the browser session decides.
            return await self.session_stack(dict(scope, api_token_id=None), receive, send)
        user, token_id = await _token_user(key)
        return await self.inner(dict(scope, user=user, api_token_id=token_id), receive, send)


def still_signed_in(scope):
    """The connection's user if its credentials still hold (an active user, and the token not revoked
    or the session not signed out since the handshake), else None. Call from a sync context."""
    user = get_user_model().objects.filter(pk=getattr(scope.get("user"), "pk", None), is_active=True).first()
    if user is None:
        return None
    token_id = scope.get("api_token_id")
    if token_id is not None:
        return user if ApiToken.objects.active().filter(pk=token_id, user=user).exists() else None
    session = scope.get("session")
    key = getattr(session, "session_key", None)
    if session is not None and (not key or not session.exists(key)):
        return None  # signed out since
    return user


def TokenAuthMiddlewareStack(inner):  # noqa: N802 (named like Channels' AuthMiddlewareStack)
    return TokenAuthMiddleware(inner)


class GuardedConsumer(AsyncJsonWebsocketConsumer):
    """A server-to-client JSON stream that checks access on connect and again on later events.

    Subclasses implement ``denies(user)``: None when the signed-in ``user`` may have this stream,
    else the close code. A connection is accepted before any refusal so the client receives the
    code (a close before accept reaches it only as a bare HTTP 403 during the handshake).
    """

    recheck_s = PERMISSION_RECHECK_S
    group: str | None = None
    finished = False
    _checked_at = 0.0

    def denies(self, user) -> CloseCode | None:
        raise NotImplementedError

    async def open(self) -> bool:
        """Accept, then refuse anonymous clients; True when the connection may go on."""
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.finish(CloseCode.NOT_SIGNED_IN)
            return False
        return True

    async def admit(self) -> bool:
        """The first permission check; refuses with the subclass's close code."""
        denied = await self._access_denied()
        if denied:
            await self.finish(denied)
            return False
        self._checked_at = time.monotonic()
        return True

    async def still_allowed(self, *, always: bool) -> bool:
        """Re-check before sending an event: every time when ``always``, else at most once per ``recheck_s``."""
        now = time.monotonic()
        if not always and now - self._checked_at < self.recheck_s:
            return True
        denied = await self._access_denied()
        self._checked_at = now
        if denied:
            # The client was let in before, so a lost right is "not allowed", not "no such".
            await self.finish(CloseCode.NOT_ALLOWED if denied == CloseCode.NOT_FOUND else denied)
            return False
        return True

    async def subscribe(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)

    async def unsubscribe(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)

    async def finish(self, code: int) -> None:
        self.finished = True
        await self.unsubscribe()
        await self.close(int(code))  # autobahn (Daphne) refuses an IntEnum: "must be an integer"

    async def disconnect(self, code):
        self.finished = True
        await self.unsubscribe()

    async def receive_json(self, content, **kwargs):
        """Clients have nothing to say; messages are ignored."""

    @database_sync_to_async
    def _access_denied(self) -> int:
        """0 while the connection may go on, else the close code."""
        user = still_signed_in(self.scope)
        if user is None:
            return CloseCode.NOT_SIGNED_IN
        return self.denies(user) or 0
