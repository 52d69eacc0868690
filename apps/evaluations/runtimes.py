"""The runtimes Crucible ships with, as rows, and whether each can run on this server now.

The rows come from the repository's definitions (``apps.sandboxing.catalog``, ``sandbox/runtimes.json``);
operators change or add rows in the admin (they are rows, not code), and a row is never overwritten
once it exists. A runtime is *available* when its image is built on the engine: an image is built
by ``manage.py build_sandbox_image --runtime NAME`` (``make test`` builds some, see scripts/setup.sh),
and a submission for a runtime whose image is missing is refused with a 400 that says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from apps.sandboxing import catalog, image

DEFAULT_RUNTIME_NAMES = ("python", "bash")
AVAILABILITY_TTL_S = 10.0  # how long one process trusts what the engine said about an image
# What ``image_versions`` says when this process cannot ask an engine (the web role of a deployment
# with workers on the engine's host): not known to be missing, so submissions are not refused here.
UNKNOWN: dict[str, str] = {}
_seen: dict[str, tuple[float, dict[str, str] | None]] = {}


def row_of(definition: catalog.Definition) -> dict:
    """A runtime row's fields from its definition; the image is left empty for ``SANDBOX_IMAGE``."""
    return {
        "name": definition.name,
        "image": definition.image if definition.own_image else "",
        "command": list(definition.run),
        "file_name": definition.file_name,
        "compile_command": list(definition.compile),
        "compile_timeout_s": definition.compile_timeout_s,
        "environment": dict(definition.env),
    }


def default_runtimes() -> list[dict]:
    """Every runtime of the repository's definitions, as rows."""
    return [row_of(definition) for definition in catalog.definitions().values()]


def ensure_default_runtimes(runtime_model) -> None:
    """Create the default runtimes that are missing; never touches ones an operator changed."""
    for runtime in default_runtimes():
        name = runtime.pop("name")
        runtime_model.objects.get_or_create(name=name, defaults=runtime)


def image_versions(reference: str) -> dict[str, str] | None:
    """The runtime versions ``reference``'s labels record, None when the engine has no such image,
    ``UNKNOWN`` when there is no engine to ask.

    Asked of the engine at most once per ``AVAILABILITY_TTL_S`` per image in one process.
    """
    now = time.monotonic()
    cached = _seen.get(reference)
    if cached is not None and now - cached[0] < AVAILABILITY_TTL_S:
        return cached[1]
    try:
        versions = image.image_versions(reference)
    except Exception:  # no engine here (a web role without one): unknown, the worker decides
        versions = UNKNOWN
    _seen[reference] = (now, versions)
    return versions


@dataclass(frozen=True)
class RuntimeState:
    """What ``GET /api/v1/runtimes/`` says of one enabled runtime."""

    name: str
    version: str | None
    compiled: bool
    file_name: str
    available: bool | None  # None: this process has no engine to ask (the worker decides at run time)
    image: str

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "compiled": self.compiled,
            "file_name": self.file_name,
            "available": self.available,
            "build_command": None
            if self.available is not False
            else f"manage.py build_sandbox_image --runtime {self.name}",
        }


def state_of(runtime) -> RuntimeState:
    """Whether the runtime row ``runtime`` can run now, and its version as its image records it."""
    reference = runtime.image or settings.SANDBOX_IMAGE
    versions = image_versions(reference)
    return RuntimeState(
        name=runtime.name,
        version=(versions or {}).get(runtime.name) or None,
        compiled=runtime.compiled,
        file_name=runtime.file_name,
        available=None if versions is UNKNOWN else versions is not None,
        image=reference,
    )


def unavailable_reason(runtime) -> str | None:
    """Why a submission for ``runtime`` cannot run now (its image is not built), or None when it can."""
    state = state_of(runtime)
    if state.available is not False:
        return None
    return (
        f"The {runtime.name} runtime is not available on this server: its image {state.image} is not built "
        f"(an operator builds it with: manage.py build_sandbox_image --runtime {runtime.name})."
    )
