"""The runtimes Crucible ships with, as rows, and whether each can run on this server now.

The rows come from the repository's definitions (``apps.sandboxing.catalog``, ``sandbox/runtimes.json``);
operators change or add rows in the admin (they are rows, not code), and a row is never overwritten
once it exists. A runtime is *available* when its image is built on the engine: an image is built
by ``manage.py build_sandbox_image --runtime NAME`` (``make test`` builds some, see scripts/setup.sh),
or in the background on first use (``apps.evaluations.builds``): a submission for a runtime of the
repository's definitions whose image is missing is accepted and waits for the build; one for a
runtime that cannot be built here, or whose last build failed, is refused with a 400 that says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings

from apps.evaluations import builds
from apps.evaluations.models import BuildStatus, Runtime
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
        "compile_memory_mb": definition.compile_memory_mb,
        "environment": dict(definition.env),
    }


def default_runtimes() -> list[dict]:
    """Every runtime of the repository's definitions, as rows."""
    return [row_of(definition) for definition in catalog.definitions().values()]


def ensure_default_runtimes(runtime_model) -> None:
    """Create the default runtimes that are missing; never touches ones an operator changed.

    ``runtime_model`` may be a migration's historical model: fields it does not have yet are left out
    (a later migration adds them with their defaults)."""
    fields = {field.name for field in runtime_model._meta.get_fields()}
    for runtime in default_runtimes():
        name = runtime.pop("name")
        defaults = {key: value for key, value in runtime.items() if key in fields}
        runtime_model.objects.get_or_create(name=name, defaults=defaults)


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


def forget(reference: str) -> None:
    """Ask the engine again next time (the image was just built or removed)."""
    _seen.pop(reference, None)


class Readiness(StrEnum):
    """Whether a submission for a runtime can run, and if not, what happens to it."""

    READY = "ready"  # its image is built (or this process has no engine to ask: the worker decides)
    AWAIT_BUILD = "await_build"  # its image is missing and is (or will be) built: the run waits for it
    MISSING = "missing"  # its image is missing and is not built on demand here: 400
    BUILD_FAILED = "build_failed"  # its last build failed: 400 until an operator builds it again


@dataclass(frozen=True)
class RuntimeState:
    """What ``GET /api/v1/runtimes/`` says of one enabled runtime."""

    name: str
    version: str | None
    compiled: bool
    file_name: str
    available: bool | None  # None: this process has no engine to ask (the worker decides at run time)
    image: str
    buildable: bool = False  # one of the repository's runtime images: built here on first use
    build: dict | None = None  # its latest build (``builds.public_view``), if one was ever requested

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
            "build": self.build,
        }

    @property
    def building(self) -> bool:
        return self.build is not None and self.build["status"] in (BuildStatus.QUEUED, BuildStatus.BUILDING)


def state_of(runtime) -> RuntimeState:
    """Whether the runtime row ``runtime`` can run now, and its version as its image records it."""
    reference = runtime.image or settings.SANDBOX_IMAGE
    versions = image_versions(reference)
    buildable = builds.definition_for(runtime) is not None
    build = builds.build_of(runtime) if buildable else None
    if versions is None and build is not None and build.status == BuildStatus.SUCCEEDED:
        forget(reference)  # built since this process last asked (by a builder elsewhere): ask again
        versions = image_versions(reference)
    return RuntimeState(
        name=runtime.name,
        version=(versions or {}).get(runtime.name) or None,
        compiled=runtime.compiled,
        file_name=runtime.file_name,
        available=None if versions is UNKNOWN else versions is not None,
        image=reference,
        buildable=buildable,
        build=builds.public_view(build),
    )


def readiness(runtime) -> tuple[Readiness, str]:
    """Whether a submission for ``runtime`` can run now, waits for its image's build, or is refused;
    with the message of a refusal."""
    state = state_of(runtime)
    if state.available is not False:
        return Readiness.READY, ""
    if state.build is not None and state.build["status"] == BuildStatus.FAILED:
        return Readiness.BUILD_FAILED, builds.failure_message(runtime, builds.build_of(runtime))
    if state.buildable and (settings.RUNTIME_BUILD_ON_DEMAND or state.building):
        return Readiness.AWAIT_BUILD, ""
    return Readiness.MISSING, (
        f"The {runtime.name} runtime is not available on this server: its image {state.image} is not built "
        f"(an operator builds it with: manage.py build_sandbox_image --runtime {runtime.name})."
    )


def unavailable_reason(runtime) -> str | None:
    """Why a submission for ``runtime`` cannot run now, or None when it can run or wait for its build."""
    ready, message = readiness(runtime)
    return message or None


def build_states() -> list[RuntimeState]:
    """The enabled runtimes whose image is missing or has a build to show (queued, building, failed,
    or built), for the form's and the dashboard's build panel."""
    states = [state_of(runtime) for runtime in Runtime.objects.filter(enabled=True).select_related("build")]
    return [state for state in states if state.build is not None or (state.buildable and state.available is False)]
