"""Crucible's Python client: the SDK (``Client``), the ``crucible`` CLI and the Inspect AI provider.

Needs only ``requests`` and ``websockets``; the Inspect provider (``crucible_client.inspect_provider``,
sandbox type ``crucible``) needs the ``inspect`` extra.
"""

__version__ = "0.1.0"

from crucible_client.errors import (  # noqa: E402 (after __version__, which the transport reads)
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    CrucibleError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    SandboxNotReady,
    ServerError,
    SessionEnded,
    Throttled,
    Unauthorized,
    Unavailable,
)
from crucible_client.sdk import DEFAULT_URL, Client  # noqa: E402

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CrucibleError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "SandboxNotReady",
    "ServerError",
    "SessionEnded",
    "Throttled",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
