"""Who is on the other end of a WebSocket: an API token, else the browser session.

``Authorization: Token <key>`` wins when present (the CLI and scripts send it); a token that is
unknown, revoked or whose user is inactive leaves the connection anonymous, so the consumer
closes it with 4401. It never falls back to the session cookie: a client that names a token
means that token. Without the header, the Django session cookie decides (browsers).

The scope gains ``user`` and ``api_token_id`` (None for session connections), so the consumer
can re-check the token on later events.
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from apps.accounts.authentication import parse_authorization


def _authorization_header(scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value
    return None


@database_sync_to_async
def _token_user(key: str):
    from apps.accounts.models import ApiToken

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
    from django.contrib.auth import get_user_model

    from apps.accounts.models import ApiToken

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
