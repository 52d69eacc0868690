"""The ``<evaluation_id:pk>`` path converter: a full id, or the short one the pages show.

It only shapes the segment (hex digits and dashes, 8 to 36 of them); which evaluation a short id
names is decided per user by ``EvaluationQuerySet.by_id`` (404 for none, 400 when ambiguous).
"""

from django.urls import register_converter


class EvaluationIdConverter:
    regex = r"[0-9a-fA-F][0-9a-fA-F-]{7,35}"

    def to_python(self, value: str) -> str:
        return value.lower()

    def to_url(self, value) -> str:
        return str(value)


register_converter(EvaluationIdConverter, "evaluation_id")
