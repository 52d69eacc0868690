"""What a log line is about, on every line about it: ``with bound(evaluation_id=...):`` sets fields that
``ContextFilter`` copies onto each record logged in that context (this thread, or a task or thread
started with the context copied), so ``LOG_FORMAT=json`` lines carry the evaluation's or session's
id wherever the line comes from (the runner, the recorder, the database retries …).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_NONE: dict[str, str] = {}  # never changed: ``bound`` sets a new dict
_fields: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("crucible_log_context", default=_NONE)  # noqa: B039


@contextlib.contextmanager
def bound(**fields) -> Iterator[None]:
    """Add ``fields`` (their values as text) to every record logged inside the block."""
    token = _fields.set({**_fields.get(), **{name: str(value) for name, value in fields.items()}})
    try:
        yield
    finally:
        _fields.reset(token)


def current() -> dict[str, str]:
    return dict(_fields.get())


class ContextFilter(logging.Filter):
    """Puts the bound fields on each record (``record.context``, and each as an attribute)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        record.context = fields
        for name, value in fields.items():
            setattr(record, name, value)
        record.context_text = "".join(f" [{name}={value}]" for name, value in fields.items())
        return True
