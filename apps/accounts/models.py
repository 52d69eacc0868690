"""Personal API tokens: shown once, stored only as a SHA-256 hash, revocable, optionally expiring, last use recorded."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "cru_"  # noqa: S105 (a public prefix, not a secret)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TokenRefusal(StrEnum):
    """Why a key does not authenticate; each gets its own message in the API's 401."""

    UNKNOWN = "unknown"  # no such key, or revoked: the caller learns nothing more
    EXPIRED = "expired"
    INACTIVE_USER = "inactive_user"


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        """Tokens that still authenticate: not revoked and not past their expiry."""
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=timezone.now())
        )


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the key, so a user can tell tokens apart without the secret.
    prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Null: the token never expires. Past it, the token is refused with its own 401 message.
    expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user, name: str, expires_at=None) -> tuple[ApiToken, str]:
        """Create a token and return it with its clear key, which is never stored and never shown again."""
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name[:100], key_hash=hash_key(key), prefix=key[:12], expires_at=expires_at
        )
        return token, key

    @classmethod
    def check_key(cls, key: str) -> tuple[ApiToken | None, TokenRefusal | None]:
        """The token a key belongs to and, when it may not be used, why (revoked reads as unknown)."""
        token = cls.objects.select_related("user").filter(key_hash=hash_key(key), revoked_at__isnull=True).first()
        if token is None:
            return None, TokenRefusal.UNKNOWN
        if token.is_expired:
            return token, TokenRefusal.EXPIRED
        if not token.user.is_active:
            return token, TokenRefusal.INACTIVE_USER
        return token, None

    @classmethod
    def authenticate(cls, key: str) -> ApiToken | None:
        """The usable token for ``key`` (its last use recorded), or None."""
        token, refusal = cls.check_key(key)
        if refusal is not None:
            return None
        token.record_use()
        return token

    def record_use(self) -> None:
        """Record use at most once a minute so a busy client does not write on every request."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() > 60:
            type(self).objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        """Still authenticates: neither revoked nor expired."""
        return not self.is_revoked and not self.is_expired

    @property
    def status(self) -> str:
        """``active``, ``expired`` or ``revoked``, as the pages and the admin show it."""
        if self.is_revoked:
            return "revoked"
        return "expired" if self.is_expired else "active"


class Quota(models.Model):
    """Limits an operator sets for one user or one group; a blank field means "not set here".

    Resolution (``apps.accounts.quotas.limits_for``): the user's own row wins, then the most generous of
    the rows of the user's groups, then the defaults from settings.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="quota"
    )
    group = models.OneToOneField("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="quota")
    submissions_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Evaluations this user may submit per rolling minute."
    )
    max_active = models.PositiveIntegerField(null=True, blank=True, help_text="Evaluations queued or running at once.")
    max_timeout_s = models.FloatField(
        null=True, blank=True, help_text="Largest timeout (seconds) the user may ask for; blank: the platform maximum."
    )
    max_memory_mb = models.PositiveIntegerField(
        null=True, blank=True, help_text="Largest memory limit (MiB) the user may ask for; blank: the platform maximum."
    )
    max_cpus = models.FloatField(
        null=True, blank=True, help_text="Largest CPU count the user may ask for; blank: the platform maximum."
    )
    high_priority = models.BooleanField(
        null=True,
        blank=True,
        verbose_name="may submit with high priority",
        help_text="High priority jumps the queue ahead of everyone's normal runs. Blank: not set here "
        "(no, unless a group allows it). Operators always may.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="quota_for_exactly_one_user_or_group",
            ),
            models.CheckConstraint(condition=models.Q(max_timeout_s__gt=0), name="quota_max_timeout_positive"),
            models.CheckConstraint(condition=models.Q(max_cpus__gt=0), name="quota_max_cpus_positive"),
        ]

    def __str__(self) -> str:
        return f"quota for {'user ' + str(self.user) if self.user_id else 'group ' + str(self.group)}"

    def clean(self):
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError("A quota is for exactly one user or one group.")


WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a public prefix, not a secret)


class WebhookSecret(models.Model):
    """The key a user's completion callbacks are signed with (HMAC-SHA256; apps/evaluations/callbacks).

    Unlike an API token it is kept in the clear: signing needs the key itself, not a hash. It is shown
    once, when made (``POST /api/v1/me/webhook-secret/``), and never again: not in the API, the pages
    or the admin. Making a new one replaces the old at once; deliveries are signed when they are sent.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"webhook secret of {self.user} (made {self.created_at:%Y-%m-%d %H:%M})"

    @staticmethod
    def new_secret() -> str:
        return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
