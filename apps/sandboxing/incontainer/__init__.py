"""Python programs that run inside a sandbox, kept as ordinary linted and tested modules: the
sessions' agent and the self-check's canary. They run on ``SANDBOX_IMAGE`` only, which has python3.

Everything the host starts in *every* sandbox (the idle process, the launcher, the artifact
collector, the reaper) is the static helper instead (``sandbox/helper/crucible-helper.c``, host side
``apps/sandboxing/helper.py``), so a runtime image needs neither python3 nor a shell.

The host never copies a file into the container: it reads a module's source here (with
``importlib.resources``) and starts it with ``python3 -I -S -c SOURCE ARGS...`` (isolated mode, no
site packages, no shell, nothing a user wrote in argv). Each module does nothing at import time,
so the host can import it to share its constants and to unit-test its functions.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The source text of the in-container module ``name`` (``agent``, ``canary``)."""
    return resources.files(__package__).joinpath(f"{name}.py").read_text(encoding="utf-8")


def python_argv(name: str, *args: str) -> list[str]:
    """The exec argv that runs module ``name`` in the sandbox's python3 with ``args``."""
    return ["python3", "-I", "-S", "-c", source(name), *args]
