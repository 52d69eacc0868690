"""The apps import downward only (README, "Layout"): a newcomer can read the tree bottom-up.

Every module under apps/ is parsed (nothing is imported or run). An app may import only the apps
its layer allows below; an import of another app inside a function (the usual way to hide a cycle)
needs an entry in ``FUNCTION_IMPORTS_ALLOWED`` saying why. Tests are left out: a test may drive the
whole stack from above (a monitoring test runs a real evaluation to see a rule fire).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# app -> the apps it may import. Layer 0: sandboxing, audit; 1: accounts; 2: monitoring;
# 3: evaluations (and later sessions); 4: tasks (its samples are evaluations: architecture.md,
# "tasks uses evaluations"); 5: console, the operator console on top.
LAYER_3_MAY_IMPORT = frozenset({"sandboxing", "audit", "accounts", "monitoring"})
MAY_IMPORT: dict[str, frozenset[str]] = {
    "sandboxing": frozenset(),
    "audit": frozenset(),
    "accounts": frozenset({"audit"}),
    "monitoring": frozenset({"audit", "accounts"}),
    "evaluations": LAYER_3_MAY_IMPORT,
    "tasks": LAYER_3_MAY_IMPORT | {"evaluations"},
    "sessions": LAYER_3_MAY_IMPORT,
    "console": frozenset({"sandboxing", "audit", "accounts", "monitoring", "evaluations", "tasks", "sessions"}),
}

# (module path, imported module) -> why it is imported inside a function. Only imports of another app count.
FUNCTION_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    ("apps/tasks/apps.py", "apps.evaluations"): "AppConfig.ready connects signal receivers once the apps are loaded",
}


@dataclass(frozen=True)
class AppImport:
    path: str  # relative to the root, e.g. apps/console/views.py
    line: int
    app: str  # the importing app
    module: str  # what it imports, e.g. apps.monitoring.models
    target: str  # the imported app
    in_function: bool


def _imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "apps":
            return [f"apps.{alias.name}" for alias in node.names]
        return [node.module]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def _function_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the import statements that sit inside a function or method."""
    lines = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines.update(n.lineno for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lines


def app_imports(root: Path) -> list[AppImport]:
    """Every import of one app by another in the product code under ``root``/apps (tests excluded)."""
    found = []
    for path in sorted((root / "apps").glob("*/**/*.py")):
        rel = path.relative_to(root)
        if "tests" in rel.parts:
            continue
        app = rel.parts[1]
        tree = ast.parse(path.read_text(), str(rel))
        in_function = _function_lines(tree)
        for node in ast.walk(tree):
            for module in _imported_modules(node):
                parts = module.split(".")
                if parts[0] == "apps" and len(parts) > 1 and parts[1] != app:
                    found.append(AppImport(str(rel), node.lineno, app, module, parts[1], node.lineno in in_function))
    return found


def upward_imports(imports: list[AppImport]) -> list[str]:
    return [
        f"{i.path}:{i.line} {i.app} imports {i.module}, but {i.app} may import only {sorted(MAY_IMPORT[i.app])}"
        for i in imports
        if i.app in MAY_IMPORT and i.target not in MAY_IMPORT[i.app]
    ]


def hidden_imports(imports: list[AppImport]) -> list[str]:
    return [
        f"{i.path}:{i.line} imports {i.module} inside a function: import it at the top, or add it to "
        "FUNCTION_IMPORTS_ALLOWED with the reason"
        for i in imports
        if i.in_function and (i.path, i.module) not in FUNCTION_IMPORTS_ALLOWED
    ]


def apps_in(root: Path) -> set[str]:
    return {path.parent.name for path in (root / "apps").glob("*/apps.py")}


# --- the tree as it is ---------------------------------------------------------------------------


def test_every_app_has_a_place_in_the_layers():
    unplaced = apps_in(ROOT) - set(MAY_IMPORT)
    assert not unplaced, f"give {sorted(unplaced)} a layer in MAY_IMPORT (and in the README's layout)"


def test_apps_import_only_the_layers_below_them():
    assert upward_imports(app_imports(ROOT)) == []


def test_no_app_imports_another_inside_a_function_without_a_stated_reason():
    assert hidden_imports(app_imports(ROOT)) == []


def test_every_allowed_function_import_is_still_there():
    present = {(i.path, i.module) for i in app_imports(ROOT) if i.in_function}
    stale = sorted(set(FUNCTION_IMPORTS_ALLOWED) - present)
    assert stale == [], f"remove these FUNCTION_IMPORTS_ALLOWED entries, the imports are gone: {stale}"


def test_the_settings_import_no_app():
    tree = ast.parse((ROOT / "crucible" / "settings.py").read_text())
    modules = [module for node in ast.walk(tree) for module in _imported_modules(node)]
    assert [m for m in modules if m == "apps" or m.startswith("apps.")] == []


# --- the checker itself --------------------------------------------------------------------------


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_catches_an_upward_import_and_one_hidden_in_a_function(tmp_path):
    _write(tmp_path, "apps/monitoring/apps.py", "")
    _write(tmp_path, "apps/monitoring/views.py", "from apps.evaluations.models import Evaluation\n")
    _write(tmp_path, "apps/accounts/apps.py", "")
    _write(tmp_path, "apps/accounts/roles.py", "def f():\n    from apps.audit import services\n")
    _write(tmp_path, "apps/accounts/tests/test_x.py", "from apps.console import views\n")
    _write(tmp_path, "apps/evaluations/jobs.py", "import apps.monitoring.alerts\nfrom apps import sandboxing\n")
    imports = app_imports(tmp_path)
    assert upward_imports(imports) == [
        "apps/monitoring/views.py:1 monitoring imports apps.evaluations.models, "
        "but monitoring may import only ['accounts', 'audit']"
    ]
    assert [message.split(" inside")[0] for message in hidden_imports(imports)] == [
        "apps/accounts/roles.py:2 imports apps.audit"
    ]
    assert {(i.path, i.target) for i in imports} == {
        ("apps/monitoring/views.py", "evaluations"),
        ("apps/accounts/roles.py", "audit"),
        ("apps/evaluations/jobs.py", "monitoring"),
        ("apps/evaluations/jobs.py", "sandboxing"),
    }
