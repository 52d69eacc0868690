"""Sign-in throttling for every way in: /accounts/login/, /admin/login/ and API token authentication.

Failed attempts are counted in Redis (fixed windows, exact across every web process) three ways, so
that a lock-out hurts the guesser rather than the account's owner:

- per address (strict, ``SIGNIN_IP_LIMIT``): failures from one client address, whatever the account
  or the path, refuse that address on every sign-in path until its window ends;
- per account at one address (``SIGNIN_ACCOUNT_IP_LIMIT``): failures for one account from one address
  refuse that account from that address only; its owner elsewhere is unaffected;
- per account from anywhere (``SIGNIN_ACCOUNT_LIMIT``, a distributed guess): password sign-in to the
  account pauses, except from addresses it has signed in from before (remembered for
  ``KNOWN_ADDRESS_DAYS``). A password reset (a link mailed to the owner) ends the pause at once.

A browser that has signed in to an account before carries a signed "device" cookie for it (the device
cookies of OWASP's advice on lock-outs). Its attempts at that account are counted on their own
(``SIGNIN_ACCOUNT_IP_LIMIT`` per browser) and none of the three locks above applies to it, so a guesser
on the same network, even the same machine, cannot lock the owner out of their usual browser.

Logins that name no account are counted like real ones, so the answers never tell which accounts exist.
The pages (``views.throttled_sign_in``) answer a refused attempt with 429, ``Retry-After`` and a message
that says what to do; the API answers 429 with ``Retry-After`` (``authentication.TokenAuthentication``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

import redis
from allauth.account.adapter import get_adapter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db.models import Q

from apps.audit import services as audit
from crucible import redis_clients

KNOWN_ADDRESS_DAYS = 30
DEVICE_COOKIE = "crucible_signin_device"
_DEVICE_SALT = "crucible.signin.device"

# KEYS: the counters to bump; ARGV: their windows in seconds, in the same order. A key gets its expiry
# when the window starts (fixed window), in the same atomic step, so no counter can live for ever.
# Returns the new counts, in order.
_BUMP = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then
    redis.call('EXPIRE', key, tonumber(ARGV[i]))
  end
end
return counts
"""


class Refusal(StrEnum):
    """Which limit refused a sign-in attempt."""

    ADDRESS = "address"
    ACCOUNT_AT_ADDRESS = "account_at_address"
    ACCOUNT = "account"
    DEVICE = "device"  # a browser that signed in to the account before, counted on its own


@dataclass(frozen=True)
class Device:
    """A browser known to have signed in to ``account``; ``nonce`` tells it apart from the owner's others."""

    account: str
    nonce: str


@dataclass(frozen=True)
class Blocked:
    """A refused attempt: which limit, and how many seconds until it lifts."""

    refusal: Refusal
    retry_after: int

    @property
    def message(self) -> str:
        wait = _duration(self.retry_after)
        if self.refusal is Refusal.ADDRESS:
            return f"Too many failed sign-in attempts from your network address. Try again in {wait}."
        if self.refusal is Refusal.DEVICE:
            return (
                f"Too many failed sign-in attempts for this account from this browser. "
                f"Try again in {wait}, or reset your password to get in now."
            )
        if self.refusal is Refusal.ACCOUNT_AT_ADDRESS:
            return (
                f"Too many failed sign-in attempts for this account from your network address. "
                f"Try again in {wait}, or reset your password to get in now."
            )
        return (
            f"Too many failed sign-in attempts for this account, from many addresses: password sign-in is "
            f"paused for it, except from addresses it has signed in from before. Try again in {wait}, "
            f"or reset your password to get in now."
        )


def _duration(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return f"{seconds} seconds" if seconds < 60 else f"{minutes} minute{'s' if minutes != 1 else ''}"


def _redis() -> redis.Redis:
    return redis_clients.default()


def client_address(request) -> str | None:
    """The client's address as allauth's own rate limits see it: ``REMOTE_ADDR``, or behind a trusted
    proxy the address that proxy put in ``X-Forwarded-For`` (``TRUSTED_PROXY_COUNT``)."""
    if request is None:
        return None
    try:
        return get_adapter(request).get_client_ip(request)
    except PermissionDenied:
        return None


def _prefix() -> str:
    return f"{settings.CRUCIBLE_INSTANCE}:signin"


def account_of(login) -> str:
    """A stable key for the account an attempt names: the user's id when one matches (by username or
    email), else a hash of the name, so a guess at a name that does not exist counts the same way."""
    if login is not None and hasattr(login, "pk"):
        return f"user:{login.pk}"
    name = " ".join(str(login or "").split()).casefold()
    if name and "\x00" not in name:  # PostgreSQL refuses NUL in a query; such a name matches no one
        user = (
            get_user_model()
            .objects.filter(Q(username__iexact=name) | Q(email__iexact=name))
            .order_by("pk")
            .values_list("pk", flat=True)
            .first()
        )
        if user is not None:
            return f"user:{user}"
    return "login:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def device_of(request) -> Device | None:
    """The device cookie the request carries, if its signature holds and it is not too old."""
    value = getattr(request, "COOKIES", {}).get(DEVICE_COOKIE) if request is not None else None
    if not value:
        return None
    try:
        data = signing.loads(value, salt=_DEVICE_SALT, max_age=KNOWN_ADDRESS_DAYS * 86400)
        return Device(account=f"user:{int(data['u'])}", nonce=str(data["n"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None


def remember_device(response, user) -> None:
    """Give the browser that just signed in as ``user`` a device cookie for that account."""
    value = signing.dumps({"u": user.pk, "n": secrets.token_urlsafe(16)}, salt=_DEVICE_SALT)
    response.set_cookie(
        DEVICE_COOKIE,
        value,
        max_age=KNOWN_ADDRESS_DAYS * 86400,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def _keys(address: str, account: str | None, device: Device | None = None) -> dict[Refusal, str]:
    if device is not None and device.account == account:
        return {Refusal.DEVICE: f"{_prefix()}:device:{device.nonce}"}
    keys = {Refusal.ADDRESS: f"{_prefix()}:address:{address}"}
    if account is not None:
        keys[Refusal.ACCOUNT_AT_ADDRESS] = f"{_prefix()}:account:{account}:address:{address}"
        keys[Refusal.ACCOUNT] = f"{_prefix()}:account:{account}"
    return keys


def _limits() -> dict[Refusal, tuple[int, int]]:
    return {
        Refusal.ADDRESS: settings.SIGNIN_IP_LIMIT,
        Refusal.ACCOUNT_AT_ADDRESS: settings.SIGNIN_ACCOUNT_IP_LIMIT,
        Refusal.ACCOUNT: settings.SIGNIN_ACCOUNT_LIMIT,
        Refusal.DEVICE: settings.SIGNIN_ACCOUNT_IP_LIMIT,
    }


def _known_key(account: str) -> str:
    return f"{_prefix()}:known:{account}"


def check(address: str | None, login=None, device: Device | None = None) -> Blocked | None:
    """Whether an attempt from ``address`` naming ``login`` (a name, a user, or None), from a browser
    with ``device`` cookie (or None), must be refused now."""
    if not address:
        return None
    account = account_of(login) if login is not None else None
    keys = _keys(address, account, device)
    client = _redis()
    with client.pipeline(transaction=False) as pipe:
        for key in keys.values():
            pipe.get(key)
            pipe.ttl(key)
        if account is not None and Refusal.ACCOUNT in keys:
            pipe.sismember(_known_key(account), address)
        replies = pipe.execute()
    limits = _limits()
    for index, (refusal, _key) in enumerate(keys.items()):
        count, ttl = int(replies[2 * index] or 0), int(replies[2 * index + 1])
        if count < limits[refusal][0]:
            continue
        if refusal is Refusal.ACCOUNT and replies[-1]:
            continue  # the owner's usual address still gets in during a distributed guess
        return Blocked(refusal, retry_after=max(1, ttl if ttl > 0 else limits[refusal][1]))
    return None


def record_failure(address: str | None, login=None, device: Device | None = None) -> None:
    """Count one failed attempt from ``address`` (and against the account ``login`` names, if any; from
    its own browser, against that browser only); the attempt that reaches a limit is audited, once per
    window (the refused ones after it are not)."""
    if not address:
        return
    account = account_of(login) if login is not None else None
    keys = _keys(address, account, device)
    limits = _limits()
    counts = _redis().eval(_BUMP, len(keys), *keys.values(), *(limits[refusal][1] for refusal in keys))
    for refusal, count in zip(keys, counts, strict=True):
        if int(count) == limits[refusal][0]:
            audit.record(
                "auth.signin_paused",
                target=f"address:{address}" if refusal is Refusal.ADDRESS else str(account),
                limit=refusal.value,
                address=address,
                failures=int(count),
                window_s=limits[refusal][1],
            )


def record_success(address: str | None, user, device: Device | None = None) -> None:
    """The owner got in from ``address``: forget that address's (and that browser's) failures for the
    account and remember the address, so a later distributed guess does not keep the owner out. The
    per-address count stays: a guesser who owns an account must not reset it by signing in between guesses."""
    if not address:
        return
    account = account_of(user)
    client = _redis()
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(_keys(address, account)[Refusal.ACCOUNT_AT_ADDRESS])
        if device is not None and device.account == account:
            pipe.delete(_keys(address, account, device)[Refusal.DEVICE])
        pipe.sadd(_known_key(account), address)
        pipe.expire(_known_key(account), KNOWN_ADDRESS_DAYS * 86400)
        pipe.execute()


def forgive_account(user) -> None:
    """The owner proved they hold the account's email (a password reset): lift every lock on it."""
    account = account_of(user)
    client = _redis()
    keys = [f"{_prefix()}:account:{account}"]
    keys += list(client.scan_iter(match=f"{_prefix()}:account:{account}:address:*", count=1000))
    client.delete(*keys)


def forget_everything() -> None:
    """Drop every sign-in counter of this installation (tests, or an operator after an incident)."""
    client = _redis()
    keys = list(client.scan_iter(match=f"{_prefix()}:*", count=1000))
    if keys:
        client.delete(*keys)
