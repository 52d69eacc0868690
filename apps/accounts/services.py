"""Token and webhook-secret actions used by the web pages, the API, the admin and the command line, each
leaving an audit entry."""

from __future__ import annotations

from django.utils import timezone

from apps.accounts.models import ApiToken, WebhookSecret
from apps.audit import services as audit

MAX_ACTIVE_TOKENS = 50


class TooManyTokens(Exception):
    pass


def create_token(user, name: str, *, expires_at=None, request=None, actor=None) -> tuple[ApiToken, str]:
    """Issue a named token for ``user``, valid until ``expires_at`` (None: until revoked); returns
    (token, clear key). The key is never stored or shown again."""
    name = " ".join(name.split())[:100] or "unnamed"
    if ApiToken.objects.active().filter(user=user).count() >= MAX_ACTIVE_TOKENS:
        raise TooManyTokens(f"At most {MAX_ACTIVE_TOKENS} active tokens; revoke one first.")
    token, key = ApiToken.issue(user, name, expires_at=expires_at)
    audit.record(
        "token.created",
        actor=actor or user,
        target=f"token:{token.pk}",
        request=request,
        owner=user.get_username(),
        name=token.name,
        prefix=token.prefix,
        expires_at=token.expires_at.isoformat() if token.expires_at else None,
    )
    return token, key


def revoke_token(token: ApiToken, *, actor=None, request=None) -> bool:
    """Revoke at once (the next request with it is refused). Returns False if it was already revoked."""
    if token.is_revoked:
        return False
    token.revoke()
    audit.record(
        "token.revoked",
        actor=actor,
        target=f"token:{token.pk}",
        request=request,
        owner=token.user.get_username(),
        name=token.name,
        prefix=token.prefix,
    )
    return True


def make_webhook_secret(user, *, request=None) -> str:
    """Make ``user`` a new webhook secret, replacing any old one at once; returns it (the only time it is
    shown). Audited, without the secret."""
    secret = WebhookSecret.new_secret()
    WebhookSecret.objects.update_or_create(user=user, defaults={"secret": secret, "created_at": timezone.now()})
    audit.record("webhook_secret.made", actor=user, target=f"user:{user.pk}", request=request)
    return secret


def webhook_secret_of(user) -> str:
    """The secret ``user``'s callbacks are signed with; one is made (and not shown) if they have none yet,
    so a delivery is always signed. The owner makes a new one to learn it."""
    found = WebhookSecret.objects.filter(user=user).values_list("secret", flat=True).first()
    if found:
        return found
    WebhookSecret.objects.get_or_create(user=user, defaults={"secret": WebhookSecret.new_secret()})
    return WebhookSecret.objects.get(user=user).secret
