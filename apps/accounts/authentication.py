"""`Authorization: Token <key>` for DRF (the WebSocket middleware uses the same lookup)."""

from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken


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


class TokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header or not header.split()[0].lower() == b"token":
            return None
        key = parse_authorization(header)
        if key is None:
            raise exceptions.AuthenticationFailed("Malformed Authorization header; use 'Token <key>'.")
        token = ApiToken.authenticate(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
