"""``client.tasks``: what samples are scored against (contract v2)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from crucible_client._transport import Transport
from crucible_client._util import fields
from crucible_client.types import Task


def task_path(slug: str) -> str:
    """Slugs contain slashes (``humaneval/0``); they stay in the path, everything else is quoted."""
    return f"/api/v1/tasks/{quote(slug, safe='/')}/"


class Tasks:
    def __init__(self, transport: Transport):
        self._t = transport

    def list(self, *, source: str | None = None, q: str | None = None, limit: int | None = 200) -> list[Task]:
        """The tasks you may use (yours and public ones), by slug."""
        return list(self._t.paged("/api/v1/tasks/", params=fields(source=source, q=q), limit=limit))

    def get(self, slug: str, *, version: int | None = None) -> Task:
        return self._t.json("GET", task_path(slug), params=fields(version=version))

    def create(self, body: dict[str, Any] | None = None, **task: Any) -> Task:
        """Create a task from its body (``slug``, ``title``, ``tests`` …) given as a dict or as keywords."""
        return self._t.json("POST", "/api/v1/tasks/", expect=(201,), json={**(body or {}), **task})
