"""Selectors return data: the HTML, the URLs and the 404s are made by templates, template tags and views."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SELECTORS = Path(__file__).resolve().parent.parent / "experiments" / "selectors"
# What a selector must not reach for: rendering, marking HTML safe, building URLs, answering HTTP.
FORBIDDEN = {"Http404", "reverse", "mark_safe", "format_html", "render_to_string", "HttpResponse"}


def _names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return (imported | called) & FORBIDDEN


@pytest.mark.parametrize("module", sorted(p.stem for p in SELECTORS.glob("*.py") if p.stem != "__init__"))
def test_selector_module_renders_nothing_and_raises_no_http_errors(module):
    assert _names_used(SELECTORS / f"{module}.py") == set()


# --- The shape of the code: no cycles, no hidden imports, small modules, one state machine --

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("experiments", "dashboard")
MAX_MODULE_LINES = 600


def _modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (migrations and the stand-in aside)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if "migrations" in parts or "standin" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _project_module(name: str) -> str | None:
    """The project module an import of `name` loads, or None for a library."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            for imported in _imports(node):
                target = _project_module(imported)
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle_counting_imports_inside_functions():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _function_imports(path: Path) -> list[str]:
    """Project modules imported inside a function (Django's AppConfig.ready aside)."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) or function.name == "ready":
            continue
        for node in ast.walk(function):
            found += [f"{function.name}: {name}" for name in _imports(node) if _project_module(name)]
    return found


@pytest.mark.parametrize(
    "module", sorted(name for name in MODULES if ".management.commands." not in name and "." in name)
)
def test_no_function_imports_a_module_of_the_project(module):
    assert _function_imports(MODULES[module]) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_600_lines(module):
    assert len(MODULES[module].read_text().splitlines()) <= MAX_MODULE_LINES


def _state_groups(path: Path) -> list[int]:
    """Lines where a tuple, list or set of two or more AttemptState members is written."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            members = [
                e
                for e in node.elts
                if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "AttemptState"
            ]
            if len(members) >= 2:
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name != "experiments.models"))
def test_groups_of_attempt_states_are_defined_on_the_model_only(module):
    assert _state_groups(MODULES[module]) == []


def test_the_state_group_finder_finds_a_group(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("OPEN = (AttemptState.REQUESTED, AttemptState.UNKNOWN)\nONE = [AttemptState.FAILED]\n")
    assert _state_groups(sample) == [1]


def test_one_function_moves_an_attempt_from_state_to_state():
    """Every compare-and-set of an attempt's state is attempt_transition's."""
    movers = [
        name
        for name, path in MODULES.items()
        if "ConclusionAttempt.objects.filter(" in path.read_text() and ".update(" in path.read_text()
    ]
    assert movers == ["experiments.services.attempts"]
