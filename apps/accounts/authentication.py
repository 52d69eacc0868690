"""`Authorization: Token <key>` for DRF (the WebSocket middleware uses the same lookup).

Unknown keys count as failed sign-ins of the caller's address (``apps.accounts.throttle``); an address
over its limit gets 429 with ``Retry-After`` before any key is looked at.
"""

import logging

import redis
from rest_framework import authentication, exceptions

from apps.accounts import throttle
from apps.accounts.models import ApiToken, TokenRefusal

log = logging.getLogger(__name__)


def parse_authorization(header: bytes | str | None) -> str | None:
    """Return the key from an ``Authorization: Token <key>`` header, or None when it is not one."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return None
    return parts[1]


def refusal_message(token: ApiToken | None, refusal: TokenRefusal) -> str:
    """What a 401 says: an expired token says when and what to do; anything else says no more than needed."""
    if refusal is TokenRefusal.EXPIRED and token is not None:
        return (
            f"This token expired on {token.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Create a new one on the API tokens page (/api-tokens/)."
        )
    return "Invalid or revoked token."


def blocked_address(address: str | None) -> throttle.Blocked | None:
    """The throttle's answer for ``address``. Keys are 256-bit random, so the throttle is not what keeps
    them from being guessed: while Redis is unreachable the API keeps answering, and says so in the log."""
    try:
        return throttle.check(address)
    except redis.RedisError as exc:
        log.warning("sign-in throttle unavailable, token authentication goes on without it: %s", exc)
        return None


def count_failed_token(address: str | None) -> None:
    try:
        throttle.record_failure(address)
    except redis.RedisError as exc:
        log.warning("sign-in throttle unavailable, a failed token was not counted: %s", exc)


class TokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header or not header.split()[0].lower() == b"token":
            return None
        address = throttle.client_address(request)
        blocked = blocked_address(address)
        if blocked is not None:
            raise exceptions.Throttled(wait=blocked.retry_after, detail=blocked.message)
        key = parse_authorization(header)
        if key is None:
            count_failed_token(address)
            raise exceptions.AuthenticationFailed("Malformed Authorization header; use 'Token <key>'.")
        token, refusal = ApiToken.check_key(key)
        if refusal is TokenRefusal.UNKNOWN:
            count_failed_token(address)  # only a guess can name no token; expired keys were real
        if refusal is not None:
            raise exceptions.AuthenticationFailed(refusal_message(token, refusal))
        token.record_use()
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
