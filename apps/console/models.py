"""What the console keeps of its own: the share of each metric that pruned rows had contributed."""

from __future__ import annotations

import json

from django.db import models
from django.db.models import F


def labels_key(labels: dict[str, str]) -> str:
    """A metric's labels as one canonical string (sorted JSON), the key of its carried value."""
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


class MetricCarry(models.Model):
    """Counts and sums the retention policy deleted from a metric computed from rows.

    The metrics are read from the record at scrape time (row counts, SQL histograms). When the
    retention policy deletes old rows, it adds what they counted here first, in the same
    transaction, and the scrape adds it back: a counter never goes down because rows were pruned.
    """

    metric = models.CharField(max_length=100)
    labels = models.CharField(max_length=300, default="", blank=True, help_text="sorted JSON of (name, value) pairs")
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["metric", "labels"], name="metric_carry_unique")]

    def __str__(self) -> str:
        return f"{self.metric}{self.labels} += {self.value}"

    @classmethod
    def add(cls, metric: str, labels: dict[str, str], value: float) -> None:
        """Add ``value`` to the carried share of ``metric`` with ``labels`` (create it at 0 first)."""
        if not value:
            return
        key = labels_key(labels)
        cls.objects.get_or_create(metric=metric, labels=key)
        cls.objects.filter(metric=metric, labels=key).update(value=F("value") + value)

    @classmethod
    def carried(cls, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
        """{labels as sorted (name, value) pairs: carried value} of ``metric``."""
        return {
            tuple(tuple(pair) for pair in json.loads(labels or "[]")): value
            for labels, value in cls.objects.filter(metric=metric).values_list("labels", "value")
        }
