"""The client package stands on its own: no Django, no server code, only the dependencies it declares.

Every module under client/crucible_client is parsed (nothing is imported): each import must be the
standard library, the package itself, or a declared dependency (the Inspect provider may also use
what the ``inspect`` extra brings).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parent.parent
PACKAGE = CLIENT / "crucible_client"
PYPROJECT = tomllib.loads((CLIENT / "pyproject.toml").read_text())
DEPENDENCIES = {"requests", "websockets"}
INSPECT_EXTRA = {"inspect_ai", "pydantic", "anyio", "yaml"}  # inspect-ai's own dependencies
PROVIDER = "crucible_client/inspect_provider.py"


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_imports_only_the_standard_library_and_its_declared_dependencies():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(CLIENT).as_posix()
        allowed = DEPENDENCIES | {"crucible_client"} | (INSPECT_EXTRA if rel == PROVIDER else set())
        for name in sorted(top_level_imports(path)):
            if name not in sys.stdlib_module_names and name not in allowed:
                problems.append(f"{rel} imports {name}")
    assert not problems, "\n".join(problems)


def test_its_declared_dependencies_are_exactly_requests_and_websockets():
    names = {spec.split(">")[0].split("=")[0].split("[")[0].strip() for spec in PYPROJECT["project"]["dependencies"]}
    assert names == DEPENDENCIES
    assert PYPROJECT["project"]["optional-dependencies"]["inspect"] == ["inspect-ai>=0.3.285"]


def test_the_cli_and_the_inspect_provider_are_registered():
    assert PYPROJECT["project"]["scripts"] == {"crucible": "crucible_client.cli:main"}
    assert PYPROJECT["project"]["entry-points"]["inspect_ai"] == {"crucible_client": "crucible_client.inspect_provider"}


def test_inspect_finds_the_crucible_sandbox_type_through_the_installed_entry_point():
    """What `make test` installs (scripts/setup.sh: pip install -e ./client) is what Inspect loads."""
    try:
        distribution = metadata.distribution("crucible-client")
    except metadata.PackageNotFoundError:
        pytest.fail("crucible-client is not installed in this environment (scripts/setup.sh installs it)")
    points = [ep for ep in distribution.entry_points if ep.group == "inspect_ai"]
    assert [(ep.name, ep.value) for ep in points] == [("crucible_client", "crucible_client.inspect_provider")]
    # A fresh interpreter that never imported the provider: only the entry point can register it.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = "from inspect_ai.util._sandbox.registry import registry_find_sandboxenv as f; print(f('crucible').__name__)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert out.stdout.strip() == "CrucibleSandboxEnvironment", out.stderr
