"""A request body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE``, for the one endpoint that needs it.

A batch of 10 000 samples is several megabytes of JSON; every other endpoint keeps Django's limit.
``allow_body_up_to(request, limit)`` reads the body (up to ``limit`` bytes) before DRF parses it,
so the parsers see it whole; a larger body raises ``BodyTooLarge`` (413) without being read past
the limit.
"""

from __future__ import annotations

from io import BytesIO


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than {limit} bytes.")
        self.limit = limit


def allow_body_up_to(request, limit: int) -> None:
    """Read ``request``'s body (a DRF or Django request) with ``limit`` instead of Django's limit."""
    django_request = getattr(request, "_request", request)
    if hasattr(django_request, "_body"):
        return
    try:
        declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge(limit)
    data = django_request.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    django_request._body = data  # what ``HttpRequest.body`` returns from now on, unchecked
    django_request._stream = BytesIO(data)
