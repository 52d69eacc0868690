"""JSON input that can be stored and answered.

``StrictJSONParser`` refuses, with a 400 naming the field, JSON that Python can decode but nothing
after it can use: nesting deeper than ``MAX_JSON_DEPTH`` (the decoder itself would hit the recursion
limit near 1000), lone UTF-16 surrogates such as ``"\\ud800"`` (no UTF-8 encoding exists for them:
neither PostgreSQL nor a JSON response can carry them) and numbers too large for a double (``1e400``
decodes to infinity, which PostgreSQL's ``jsonb`` and strict JSON refuse).
"""

from __future__ import annotations

import json
import math
import sys

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 64
NON_FIELD = "non_field_errors"


def _label(key) -> str:
    """A key as it may be shown back: ASCII-escaped (a lone surrogate or NUL cannot break the reply), short."""
    text = json.dumps(key if isinstance(key, str) else str(key))
    return text if len(text) <= 42 else text[:40] + '…"'


def _short(place: str) -> str:
    return place if len(place) <= 80 else place[:79] + "…"


def _text_problem(text: str, *, forbid_nul: bool) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (such as \\ud800), which is not valid Unicode"
    if forbid_nul and "\x00" in text:
        return "must not contain NUL characters (\\u0000)"
    return None


def _scalar_problem(value, *, forbid_nul: bool) -> str | None:
    if isinstance(value, str):
        return _text_problem(value, forbid_nul=forbid_nul)
    if isinstance(value, float) and not math.isfinite(value):
        return "is a number out of range (at most about 1.8e308)"
    return None


def json_problem(value, *, where: str = "", max_depth: int = MAX_JSON_DEPTH, forbid_nul: bool = False):
    """The first thing in a decoded JSON value that cannot be stored or sent back, as (where, problem), or None.

    ``where`` names the value (``metadata``); inner places are shown as ``metadata["a"][0]``. Walks
    iteratively, so a value of any depth is checked without recursion.
    """
    stack = [(value, where, 0)]
    while stack:
        item, place, depth = stack.pop()
        if depth > max_depth:
            return _short(place), f"is nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            for key, inner in item.items():
                inner_place = f"{place}[{_label(key)}]" if place else key
                problem = _text_problem(key, forbid_nul=forbid_nul) if isinstance(key, str) else None
                if problem is not None:
                    return _short(f"{place}[{_label(key)}]" if place else _label(key)), f"has a key that {problem}"
                stack.append((inner, inner_place, depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, f"{place}[{index}]", depth + 1) for index, inner in enumerate(item))
        else:
            problem = _scalar_problem(item, forbid_nul=forbid_nul)
            if problem is not None:
                return _short(place), problem
    return None


def field_of(place: str) -> str:
    """The top-level field a place is in (``metadata["a"]`` -> ``metadata``), or the non-field key."""
    field = place.split("[", 1)[0]
    return field if field and not field.startswith('"') else NON_FIELD


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, plus a 400 naming the field for JSON that could never be stored or answered."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.") from None
        except ParseError as exc:
            raise ParseError(_plain(exc)) from None
        found = json_problem(data)
        if found is not None:
            place, problem = found
            message = f"{place} {problem}." if place else f"The body {problem}."
            raise ValidationError({field_of(place): [message]})
        return data


def _plain(exc: ParseError) -> str:
    """DRF's parse error, without the Python advice some decoder errors carry."""
    cause = exc.__context__
    if isinstance(cause, UnicodeDecodeError):
        return "JSON parse error - the body is not valid UTF-8."
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"JSON parse error - a number has more than {sys.get_int_max_str_digits()} digits."
    return str(exc.detail)
