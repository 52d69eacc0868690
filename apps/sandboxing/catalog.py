"""The runtimes the platform knows how to build and run, as data (``sandbox/runtimes.json``).

Each definition names the Debian packages its image adds to the sandbox base (python3 and bash;
the launcher and the idle process need neither: they are the static helper every image carries),
an optional compile step and the run step (argv,
no shell: ``{file}`` is the entry point's path, ``{build}`` the exec-allowed build directory), the
entry point's file name, the command that prints its version, extra platform environment, the
compile step's wall-clock limit (it shares the run's memory: see ``execution.compile_then_run``),
and whether setup builds its image (``prebuilt``). A runtime with no packages runs on
``SANDBOX_IMAGE`` itself; the others get their own image, ``crucible-runtime-NAME``
(``SANDBOX_RUNTIME_IMAGE_PREFIX``), built offline like the sandbox image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings

from apps.sandboxing.policy import Runtime

CATALOG_PATH = Path(settings.BASE_DIR) / "sandbox" / "runtimes.json"
DEFAULT_COMPILE_TIMEOUT_S = 30.0
DEFAULT_COMPILE_MEMORY_MB = 512
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Definition:
    """One runtime: how its image is made and how a program is compiled and run in it."""

    name: str
    packages: tuple[str, ...]
    file_name: str
    run: tuple[str, ...]
    version: tuple[str, ...]
    compile: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S
    compile_memory_mb: int = DEFAULT_COMPILE_MEMORY_MB
    prebuilt: bool = False  # built by scripts/setup.sh (``make run``, ``make test``); else on demand

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"runtime name {self.name!r} is not a short lowercase slug")
        bad = [package for package in self.packages if not _PACKAGE.match(package)]
        if bad:
            raise ValueError(f"runtime {self.name}: bad package names {bad}")
        if not self.run or not self.version:
            raise ValueError(f"runtime {self.name}: run and version commands are required")
        if any(not _ENV_NAME.match(name) for name, _ in self.env):
            raise ValueError(f"runtime {self.name}: bad environment variable name")

    @property
    def compiled(self) -> bool:
        return bool(self.compile)

    @property
    def own_image(self) -> bool:
        """Whether this runtime has an image of its own (else it runs on ``SANDBOX_IMAGE``)."""
        return bool(self.packages)

    @property
    def image(self) -> str:
        return f"{self.repository}:latest" if self.own_image else settings.SANDBOX_IMAGE

    @property
    def repository(self) -> str:
        return f"{settings.SANDBOX_RUNTIME_IMAGE_PREFIX}{self.name}"

    def to_runtime(self) -> Runtime:
        """The sandbox's view of this runtime: image, commands, file name, environment."""
        return Runtime(
            image=self.image,
            command=list(self.run),
            file_name=self.file_name,
            compile_command=list(self.compile),
            compile_timeout_s=self.compile_timeout_s,
            compile_memory_mb=self.compile_memory_mb,
            environment=dict(self.env),
        )


def _definition(name: str, raw: dict) -> Definition:
    return Definition(
        name=name,
        packages=tuple(raw.get("packages", ())),
        file_name=raw["file_name"],
        run=tuple(raw["run"]),
        version=tuple(raw["version"]),
        compile=tuple(raw.get("compile", ())),
        env=tuple(sorted(raw.get("env", {}).items())),
        compile_timeout_s=float(raw.get("compile_timeout_s", DEFAULT_COMPILE_TIMEOUT_S)),
        compile_memory_mb=int(raw.get("compile_memory_mb", DEFAULT_COMPILE_MEMORY_MB)),
        prebuilt=bool(raw.get("prebuilt", False)),
    )


@cache
def definitions() -> dict[str, Definition]:
    """Every runtime definition in the repository, by name."""
    raw = json.loads(CATALOG_PATH.read_text())
    return {name: _definition(name, value) for name, value in raw.items()}


def definition(name: str) -> Definition:
    """The definition called ``name``; ``KeyError`` when there is none."""
    return definitions()[name]


def prebuilt() -> list[str]:
    """The runtimes with images of their own that setup builds (``"prebuilt": true``)."""
    return [name for name, d in definitions().items() if d.prebuilt and d.own_image]


def runtime(name: str) -> Runtime:
    """The sandbox runtime of the definition called ``name``; ``KeyError`` when there is none."""
    return definition(name).to_runtime()
