"""The exceptions the SDK raises: one base class, one class per kind of HTTP answer.

Every error from the API carries what a caller needs to act on it without parsing text: the HTTP
``status``, the server's ``message`` (its ``detail``, or its field errors joined), the
machine-readable ``code`` when the server gives one (sandbox files: ``not_found``,
``is_a_directory``, ``permission_denied``, ``too_large`` …), the parsed ``body`` and, on 429 and
503, ``retry_after`` in seconds.
"""

from __future__ import annotations

from typing import Any


class CrucibleError(Exception):
    """Anything that went wrong talking to Crucible."""


class ConnectionFailed(CrucibleError):
    """The server could not be reached, or the connection broke before an answer arrived."""


class ProtocolError(CrucibleError):
    """The server answered with something the client cannot read (e.g. not JSON where JSON was due)."""


class SandboxNotReady(CrucibleError):
    """A sandbox did not become ready: it ended while starting (``end_reason``, ``error``) or took too long."""

    def __init__(self, message: str, sandbox: dict | None = None):
        super().__init__(message)
        self.sandbox = sandbox or {}
        self.end_reason = self.sandbox.get("end_reason")
        self.error = self.sandbox.get("error") or ""


class ApiError(CrucibleError):
    """The API answered with an error status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        method: str = "",
        url: str = "",
    ):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.body = body
        self.retry_after = retry_after
        self.method = method
        self.url = url


class BadRequest(ApiError):
    """400: invalid input; ``body`` holds the field errors, ``message`` them joined in one line."""


class Unauthorized(ApiError):
    """401: the token is missing, wrong or revoked."""


class Forbidden(ApiError):
    """403: signed in but not allowed (a file the sandbox user may not touch has ``code`` permission_denied)."""


class NotFound(ApiError):
    """404: no such object, or not yours (another user's objects are indistinguishable from missing ones)."""


class Conflict(ApiError):
    """409: the request conflicts with the object's state (e.g. an Idempotency-Key reused with another body)."""


class SessionEnded(Conflict):
    """409 from a sandbox route: the session has ended; ``end_reason`` says why."""

    @property
    def end_reason(self) -> str | None:
        return self.body.get("end_reason") if isinstance(self.body, dict) else None


class PayloadTooLarge(ApiError):
    """413: the body, the input or the file is over a limit."""


class Throttled(ApiError):
    """429: over a quota or the queue is full; ``retry_after`` says when to try again."""


class Unavailable(ApiError):
    """503: the service cannot take this now (no session host, kill switch engaged …)."""


class ServerError(ApiError):
    """Any other 5xx."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: Throttled,
    503: Unavailable,
}


def error_class(status: int) -> type[ApiError]:
    if status in BY_STATUS:
        return BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def server_message(body: Any, fallback: str) -> str:
    """One readable line from an error body: its ``detail``/``error``, else its field errors joined."""
    if isinstance(body, dict):
        message = body.get("detail") or body.get("error")
        if isinstance(message, str) and message:
            return message
        parts = []
        for name, errors in body.items():
            if name in ("code", "retry_after"):
                continue
            text = " ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
            parts.append(text if name == "non_field_errors" else f"{name}: {text}")
        if parts:
            return "; ".join(parts)
    if isinstance(body, list) and body:
        return " ".join(map(str, body))
    return fallback
