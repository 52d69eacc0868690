"""Typed readers for settings taken from the environment.

Each reader fails loudly (``ImproperlyConfigured``) on a value it cannot parse, so a
typo in a deployment never silently turns into a default. Secrets may also be given
as ``NAME_FILE`` pointing at a file that holds the value (Docker/Kubernetes secrets).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_MISSING = object()


def envstr(name: str, default: str | None | object = _MISSING, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the variable's value, or the contents of the file named by ``NAME_FILE``."""
    environ = os.environ if environ is None else environ
    if name in environ:
        return environ[name]
    file_name = environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    if default is _MISSING:
        raise ImproperlyConfigured(f"The environment variable {name} is required.")
    return default  # type: ignore[return-value]


def envbool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = envstr(name, None, environ)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use one of: 1/0, true/false, yes/no, on/off).")


def envint(
    name: str,
    default: int,
    environ: Mapping[str, str] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = envstr(name, None, environ)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}.")
    return value


def envfloat(
    name: str,
    default: float,
    environ: Mapping[str, str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    raw = envstr(name, None, environ)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}.")
    return value


def envlist(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list; blanks around items are dropped, empty items refused."""
    raw = envstr(name, None, environ)
    if raw is None:
        return list(default)
    if not raw.strip():
        return []
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(f"{name}={raw!r} has an empty item.")
    return items


def envchoice(name: str, default: str, choices: list[str], environ: Mapping[str, str] | None = None) -> str:
    raw = envstr(name, None, environ)
    if raw is None:
        return default
    value = raw.strip()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}.")
    return value


_RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"(\d+)/(\d*)([smhd])", re.ASCII)


def envrate(name: str, default: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """A rate such as ``10/5m`` (ten per five minutes; units s, m, h, d) as (count, window in seconds)."""
    raw = envstr(name, None, environ)
    text = (default if raw is None else raw).strip()
    match = _RATE.fullmatch(text)
    if match is None:
        raise ImproperlyConfigured(f"{name}={text!r} is not a rate like 10/5m (count/period, units s, m, h, d).")
    count, amount, unit = int(match[1]), int(match[2] or 1), _RATE_UNITS[match[3]]
    if count < 1 or amount < 1:
        raise ImproperlyConfigured(f"{name}={text!r} needs a count and a period of at least 1.")
    return count, amount * unit


# A DNS name: dot-separated labels of letters, digits, hyphens (and underscores, seen in internal names).
_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?", re.ASCII
)


def envhosts(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list of host names, IP addresses and CIDR networks (``10.0.0.0/8``, ``fd00::/8``).

    Names come back lower-case without a trailing dot, networks in their canonical form; anything else
    (a URL, a port, a malformed network) is refused, so a typo never widens or narrows an allow-list quietly."""
    items = []
    for item in envlist(name, default, environ):
        try:
            items.append(str(ipaddress.ip_network(item, strict=False)))
            continue
        except ValueError:
            pass
        if "/" in item or not _HOST_NAME.fullmatch(item.lower()):
            raise ImproperlyConfigured(f"{name}: {item!r} is not a host name, an IP address or a CIDR network.")
        items.append(item.lower().rstrip("."))
    return items
