"""Content negotiation for views whose ``?format=`` picks what they return (json or jsonl), not one of
DRF's renderers (DRF would answer 404 for a format it has no renderer for)."""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation


class FormatIsOurs(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
