"""Per-user quotas: submissions per minute, evaluations active at once, the largest limits one may ask for,
and whether one may submit with high priority.

The evaluations app calls ``limits_for(user)`` to cap the limits a submission asks for, and
``enforce_submission_quota(user, active_count=...)`` before it writes the row; it turns ``QuotaExceeded``
into a 429 with ``Retry-After``. The rate counter is a sliding window kept in Redis (one sorted set per
user, updated by a Lua script), so it is exact across every web process and worker.

High priority jumps every queue, so it is the operators' and the quota's decision, never a user's free
choice (``may_submit_high_priority``); the evaluations app refuses it with a 403 naming the field.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db.models import Q

from apps.accounts.models import Quota
from apps.accounts.roles import is_operator
from crucible import redis_clients

WINDOW_S = 60
# We cannot know when a running evaluation will end; this is a polite "try again soon".
ACTIVE_RETRY_AFTER_S = 5


class QuotaExceeded(Exception):
    """Raised when a submission would go over a quota. ``message`` names the quota; ``retry_after`` is seconds."""

    def __init__(self, message: str, retry_after: int, quota: str):
        super().__init__(message)
        self.message = message
        self.retry_after = max(1, int(retry_after))
        self.quota = quota  # "submissions_per_minute" or "max_active"


@dataclass(frozen=True)
class UserLimits:
    submissions_per_minute: int
    max_active: int
    max_timeout_s: float | None  # None: the platform maximum (SANDBOX_MAX_TIMEOUT_S)
    max_memory_mb: int | None  # None: the platform maximum (SANDBOX_MAX_MEMORY_MB)
    max_cpus: float | None  # None: the platform maximum (SANDBOX_MAX_CPUS)
    high_priority: bool = False  # may submit with priority "high" (operators always may)


FIELDS = ("submissions_per_minute", "max_active", "max_timeout_s", "max_memory_mb", "max_cpus", "high_priority")


def default_limits() -> UserLimits:
    return UserLimits(
        submissions_per_minute=settings.QUOTA_SUBMISSIONS_PER_MINUTE,
        max_active=settings.QUOTA_MAX_ACTIVE,
        max_timeout_s=None,
        max_memory_mb=None,
        max_cpus=None,
        high_priority=False,
    )


def limits_for(user) -> UserLimits:
    """The user's own quota row overrides their groups' rows (the most generous wins), which override settings."""
    values = {name: getattr(default_limits(), name) for name in FIELDS}
    if user is None or not getattr(user, "is_authenticated", False):
        return UserLimits(**values)
    rows = Quota.objects.filter(Q(user=user) | Q(group__user=user)).distinct().order_by("pk")  # one query
    own = [row for row in rows if row.user_id == user.pk]
    groups = [row for row in rows if row.user_id is None]
    for name in FIELDS:
        group_values = [getattr(row, name) for row in groups if getattr(row, name) is not None]
        if group_values:
            values[name] = max(group_values)
        if own and getattr(own[0], name) is not None:
            values[name] = getattr(own[0], name)
    return UserLimits(**values)


def _redis() -> redis.Redis:
    return redis_clients.default()


def _now() -> float:
    return time.time()


# KEYS[1] the user's window; ARGV: now, window, limit, member. Returns {allowed, oldest timestamp or -1}.
# Atomic in Redis, so two processes can never both take the last slot.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, oldest[2] or '-1'}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1)
return {1, '-1'}
"""


def _rate_key(user) -> str:
    return f"{settings.CRUCIBLE_INSTANCE}:quota:submissions:{user.pk}"


def enforce_submission_quota(user, *, active_count: int, limits: UserLimits | None = None) -> None:
    """Raise QuotaExceeded if ``user`` may not submit now; otherwise count this submission.

    ``active_count`` is the number of the user's evaluations queued or running. Check the active limit
    first so a refused submission does not use up a slot of the per-minute rate. ``limits``: the
    user's ``limits_for``, when the caller has read them already.
    """
    limits = limits or limits_for(user)
    if active_count >= limits.max_active:
        raise QuotaExceeded(
            f"Quota exceeded: at most {limits.max_active} evaluations may be queued or running at once "
            f"(you have {active_count}).",
            retry_after=ACTIVE_RETRY_AFTER_S,
            quota="max_active",
        )
    now = _now()
    allowed, oldest = _redis().eval(
        _TAKE_SLOT, 1, _rate_key(user), repr(now), WINDOW_S, limits.submissions_per_minute, f"{now!r}:{uuid.uuid4()}"
    )
    if not int(allowed):
        oldest_ts = float(oldest) if float(oldest) >= 0 else now
        retry_after = math.ceil(oldest_ts + WINDOW_S - now)
        raise QuotaExceeded(
            f"Quota exceeded: at most {limits.submissions_per_minute} submissions per minute.",
            retry_after=retry_after,
            quota="submissions_per_minute",
        )


def may_submit_high_priority(user, limits: UserLimits | None = None) -> bool:
    """Operators always may; anyone else only when their quota (their own row, else a group's) allows it."""
    return is_operator(user) or (limits or limits_for(user)).high_priority


def reset_submission_quota(user) -> None:
    """Forget the user's recent submissions (operators, tests)."""
    _redis().delete(_rate_key(user))
