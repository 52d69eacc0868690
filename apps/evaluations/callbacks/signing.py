"""The signature of a callback: ``X-Crucible-Signature: sha256=<hex HMAC-SHA256 of the raw body>``,
keyed with the owner's webhook secret. A receiver recomputes it over the bytes it received (before
parsing them) and compares in constant time; ``verify`` is that, for tests and for Python receivers."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Crucible-Signature"
PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The header value for ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str) -> bool:
    """Does ``header`` (the received X-Crucible-Signature) sign exactly ``body`` with ``secret``?"""
    return hmac.compare_digest(sign(body, secret), header or "")
