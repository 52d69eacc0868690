"""HTTP with the API's manners: token auth, retries that honour ``Retry-After``, typed errors.

What is retried, and why:

* 429 and 503 (any method): the server refused the request before doing anything, and says when
  to come back (``Retry-After``, seconds or an HTTP date). The client waits that long (at most
  ``max_retry_wait_s``; a longer wait is the caller's decision, so the error is raised at once).
  A 503 whose ``code`` is ``interrupted`` was cut off midway: it is retried only when safe (below).
* Connection errors, timeouts, 502 and 504, only for requests that are safe to send twice: GET,
  HEAD, PUT, DELETE, OPTIONS, and a POST that carries an ``Idempotency-Key`` (the server returns
  the first result for a repeated key). Any other POST might have been carried out already.

Waits without ``Retry-After`` grow exponentially with full jitter (``backoff_s * 2**n``, capped).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

import requests

from crucible_client import __version__
from crucible_client.errors import (
    ApiError,
    ConnectionFailed,
    ProtocolError,
    SessionEnded,
    error_class,
    server_message,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
THROTTLE_STATUSES = frozenset({429, 503})
GATEWAY_STATUSES = frozenset({502, 504})
MAX_BACKOFF_S = 30.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now: a number of seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class Transport:
    """One ``requests.Session`` against one Crucible: ``request()`` returns a response or raises an ApiError."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_retry_wait_s: float = 60.0,
        session: requests.Session | None = None,
        user_agent: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the Crucible URL must look like http://host:port, not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_retry_wait_s = max_retry_wait_s
        self.sleep = sleep
        self.session = session or requests.Session()
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": user_agent or f"crucible-client/{__version__}"}
        )
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def close(self) -> None:
        self.session.close()

    # --- one request, retried -----------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        expect: Iterable[int] = (200,),
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        stream: bool = False,
        sandbox: bool = False,
    ) -> requests.Response:
        """Send, retrying as the module says; the response when its status is in ``expect``.

        ``sandbox``: the path is a sandbox route, so a 409 is a ``SessionEnded``."""
        method = method.upper()
        expect = tuple(expect)
        headers = dict(headers or {})
        replayable = method in IDEMPOTENT_METHODS or (method == "POST" and bool(headers.get("Idempotency-Key")))
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method,
                    self.url + path,
                    params=params,
                    json=json,
                    data=data,
                    headers=headers,
                    timeout=self.timeout if timeout is None else timeout,
                    stream=stream,
                )
            except requests.RequestException as exc:
                if replayable and attempt < self.max_retries:
                    self.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise ConnectionFailed(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from exc
            if response.status_code in expect:
                return response
            wait = self._retry_wait(response, attempt, replayable)
            if wait is None:
                raise error_from_response(response, method, sandbox=sandbox)
            response.close()
            self.sleep(wait)
            attempt += 1

    def _retry_wait(self, response: requests.Response, attempt: int, replayable: bool) -> float | None:
        """How long to wait before trying again, or None to give up now."""
        if attempt >= self.max_retries:
            return None
        status = response.status_code
        if status == 503 and not replayable and interrupted(response):
            return None  # the work had started when it was cut off: sending it again could do it twice
        if status in THROTTLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is None:
                return self._backoff(attempt)
            return retry_after if retry_after <= self.max_retry_wait_s else None
        if status in GATEWAY_STATUSES and replayable:
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(MAX_BACKOFF_S, self.backoff_s * 2**attempt))  # noqa: S311 (jitter)

    # --- conveniences ---------------------------------------------------------------------------
    def json(self, method: str, path: str, **kwargs) -> Any:
        """The parsed JSON of a successful response (None for an empty body)."""
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        body = json_or_none(response)
        if body is None:
            raise ProtocolError(
                f"{method} {path}: the server sent something that is not JSON (HTTP {response.status_code})"
            )
        return body

    def paged(self, path: str, *, params: Mapping[str, Any] | None = None, limit: int | None = None):
        """Every item of a page-number paginated list (``?page=N``), up to ``limit``."""
        page, seen = 1, 0
        while True:
            data = self.json("GET", path, params={**(params or {}), "page": page})
            items = data.get("results", []) if isinstance(data, dict) else (data or [])
            for item in items:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            if not isinstance(data, dict) or not data.get("next") or not items:
                return
            page += 1


def error_from_response(response: requests.Response, method: str = "", *, sandbox: bool = False) -> ApiError:
    """The typed error for an error response (``sandbox``: a 409 is ``SessionEnded``)."""
    body = json_or_none(response)
    status = response.status_code
    cls = SessionEnded if sandbox and status == 409 else error_class(status)
    fallback = (response.text or "").strip()[:300] if body is None else ""
    return cls(
        status,
        server_message(body, fallback or response.reason or "error"),
        code=body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), str) else None,
        body=body,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        method=method,
        url=response.url or "",
    )


def interrupted(response: requests.Response) -> bool:
    """A 503 saying the operation was cut off midway (``code`` interrupted), not refused before it began."""
    body = json_or_none(response)
    return isinstance(body, dict) and body.get("code") == "interrupted"


def json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
