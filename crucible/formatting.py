"""Template filters that make numbers read the same on every page (a template builtin: no ``{% load %}``).

Durations read as "11.0 s" or "2 min 3 s" (pages keep the exact milliseconds in a ``title``), sizes in
one unit family, binary (KiB, MiB, GiB: what the memory limits mean), and JSON as indented JSON.

``filesizeformat`` is replaced by ``binary_size``: Django's already counts in 1024s but labels them
"KB"/"MB", which put "MB" and "MiB" side by side on one page.
"""

from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def duration_ms(value) -> str:
    """Milliseconds for people: 850 -> "850 ms", 11029 -> "11.0 s", 123000 -> "2 min 3 s", 2 h 5 min."""
    if value is None or value == "":
        return "—"
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return str(value)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter(name="filesizeformat")
@register.filter
def binary_size(value) -> str:
    """Bytes in binary units, one family everywhere: 512 B, 1.5 KiB, 64.0 MiB, 1.00 GiB."""
    if value is None or value == "":
        return "—"
    try:
        size = float(value)
    except (TypeError, ValueError):
        return str(value)
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.2f} {unit}" if size < 10 else f"{size:.1f} {unit}"
    return f"{size:.1f} TiB"


@register.filter
def pretty_json(value) -> str:
    """A JSON value indented for reading (strings as themselves); autoescaped by the template as usual."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


@register.filter
def as_json(value) -> str:
    """A value as one line of JSON (not a Python repr: ``{"rule": "x"}``, not ``{'rule': 'x'}``)."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
