"""Small helpers shared by the resource modules."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def segment(value: str) -> str:
    """One path segment, quoted (an id typed by a person must not be able to leave its route)."""
    return quote(str(value), safe="")


def fields(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not None), as a JSON body or query."""
    return {name: value for name, value in values.items() if value is not None}
