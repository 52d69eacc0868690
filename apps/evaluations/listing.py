"""The filters of the evaluation list, shared by the API (``?status=…``) and the list page.

One parser for both, so a filter means the same thing everywhere: ``status``, ``q`` (search),
``language``, ``label`` (has this label), ``name`` (contains), ``owner`` (a username: only
operators see others' evaluations, so for anyone else it can only narrow their own list),
``created_after`` / ``created_before`` (an ISO date or date-time; a date alone is a whole day in
UTC, both ends inclusive).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from apps.evaluations.models import Status

MAX_FILTER_CHARS = 200


class FiltersInvalid(Exception):
    """A 400 naming each filter that could not be understood."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass
class ListFilters:
    status: str = ""
    q: str = ""
    language: str = ""
    label: str = ""
    name: str = ""
    owner: str = ""
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    raw: dict[str, str] = field(default_factory=dict)  # what was typed, to show it back in the form
    errors: dict[str, list[str]] = field(default_factory=dict)  # filters dropped as not understood (pages)

    def apply(self, queryset):
        """``queryset`` narrowed by every filter given, newest first."""
        if self.status:
            queryset = queryset.filter(status=self.status)
        if self.language:
            queryset = queryset.filter(language=self.language)
        if self.label:
            queryset = queryset.filter(labels__contains=[self.label])
        if self.name:
            queryset = queryset.filter(name__icontains=self.name)
        if self.owner:
            queryset = queryset.filter(owner__username=self.owner)
        if self.created_after:
            queryset = queryset.filter(created_at__gte=self.created_after)
        if self.created_before:
            queryset = queryset.filter(created_at__lt=self.created_before)
        return queryset.search(self.q).order_by("-created_at")

    @property
    def any(self) -> bool:
        return any(self.raw.values())


def _moment(text: str, *, end: bool) -> dt.datetime | None:
    """An ISO date or date-time as an aware moment; a date's end (``end``) is the next midnight (UTC)."""
    day = parse_date(text) if len(text) == 10 else None  # parse_datetime would take a date as midnight
    if day is not None:
        start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
        return start + dt.timedelta(days=1) if end else start
    moment = parse_datetime(text)
    if moment is None:
        raise ValueError(text)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, dt.UTC)


def parse_filters(params, *, strict: bool) -> ListFilters:
    """Filters from query parameters. ``strict`` (the API): an unknown status or a bad date is a
    FiltersInvalid; otherwise (the page) such a filter is dropped and reported in ``errors``."""
    raw = {
        key: str(params.get(key, "")).strip()[:MAX_FILTER_CHARS]
        for key in ("status", "q", "language", "label", "name", "owner", "created_after", "created_before")
    }
    filters, errors = ListFilters(raw=raw), {}
    for key in ("q", "language", "label", "name", "owner"):
        setattr(filters, key, raw[key])
    if raw["status"]:
        if raw["status"] in Status.values:
            filters.status = raw["status"]
        else:
            errors["status"] = [f"Unknown status; choose one of: {', '.join(Status.values)}."]
    for key in ("created_after", "created_before"):
        if not raw[key]:
            continue
        try:
            setattr(filters, key, _moment(raw[key], end=key == "created_before"))
        except ValueError:
            errors[key] = ["Must be a date (2026-05-04) or an ISO date-time (2026-05-04T14:00:00Z)."]
    if errors and strict:
        raise FiltersInvalid(errors)
    filters.errors = errors
    return filters
