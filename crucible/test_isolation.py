"""Helpers that keep parallel test processes from sharing Redis state."""

from urllib.parse import urlparse, urlunparse


def offset_redis_db(url: str, offset: int) -> str:
    """``redis://h:p/3`` with offset 1 becomes ``redis://h:p/4`` (Redis has databases 0-15)."""
    parsed = urlparse(url)
    base = int(parsed.path.lstrip("/") or 0)
    return urlunparse(parsed._replace(path=f"/{(base + offset) % 16}"))
