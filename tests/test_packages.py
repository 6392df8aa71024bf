"""selectors/ and services/ packages: the facade re-exports every public name, and our code skips it.

Tests patch the feature submodule (experiments.services.conclusions, ...). A caller that
imported a name from the package facade would keep the original object and a patch
would silently miss it, so no module of ours imports through the facade.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "selectors": ["workspaces", "experiment_list", "conclusions", "audit", "bookmarks"],
    "services": ["workspaces", "conclusions", "bookmarks", "signin"],
}


def _public_names(path: Path) -> list[str]:
    """Top-level functions, classes and constants a module defines itself (not imports), public ones."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_") and name != "logger"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_reexports_every_public_name_of_its_modules(package):
    facade = importlib.import_module(f"experiments.{package}")
    expected = []
    for module_name in PACKAGES[package]:
        module = importlib.import_module(f"experiments.{package}.{module_name}")
        names = _public_names(ROOT / "experiments" / package / f"{module_name}.py")
        assert names, module_name
        for name in names:
            assert getattr(facade, name) is getattr(module, name), f"{package}.{name}"
        expected += names
    assert sorted(facade.__all__) == sorted(expected)
    assert len(set(facade.__all__)) == len(facade.__all__)


def _facade_imports(path: Path) -> list[str]:
    """Imports in `path` that take names from a package facade instead of a feature module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level:
            continue
        for package, modules in PACKAGES.items():
            if node.module == "experiments":
                found += [f"experiments.{package}" for alias in node.names if alias.name == package]
            elif node.module == f"experiments.{package}":
                found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name not in modules]
    return found


def test_our_code_imports_feature_modules_not_the_package_facade():
    sources = [path for path in (ROOT / "experiments").rglob("*.py") if "migrations" not in path.parts]
    sources += (ROOT / "tests").rglob("*.py")
    offenders = {str(path.relative_to(ROOT)): found for path in sources if (found := _facade_imports(path))}
    assert offenders == {}
